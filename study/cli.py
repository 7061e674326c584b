"""`study`: parse arguments, call one function, print. Exit codes: 0 done, 1 a problem the
message names, 2 bad command-line usage, 130 interrupted (the message says how to resume)."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path

from study import names
from study.config import load_sweep, parse_override
from study.errors import BadInput, StudyError
from study.processes import interrupted
from study.serve import LOCAL_UI, store_ui
from study.store import Store, redact


def package_version() -> str:
    """The installed package's version (its metadata), else the source tree's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("study")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from study import __version__

        return __version__


def _store_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where runs are kept (default: one folder, mlruns/)")
    group.add_argument("--store", metavar="DIR", help="folder of the local store (env STUDY_STORE; default mlruns)")
    group.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (env STUDY_TRACKING_URI)")
    group.add_argument("--storage", metavar="URL", help="Optuna storage URL (env STUDY_STORAGE)")
    group.add_argument("--artifacts", metavar="DIR", help="artifact root for new experiments (env STUDY_ARTIFACTS)")


def _store(args, check: bool = True) -> Store:
    """The store the command's options name, checked before the command opens it (Store.check: a
    damaged database or a server that does not answer is one line, not a traceback or a wait)."""
    store = Store.resolve(args.store, args.tracking_uri, args.storage, args.artifacts)
    if check:
        store.check()
    return store


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


# ------------------------------------------------------------------------------------ run
def cmd_run(args) -> int:
    from study.processes import catch_interrupts, terminate_as_interrupt

    catch_interrupts()  # a Ctrl+C a finalizer swallows is raised again at the next safe point
    terminate_as_interrupt()  # SIGTERM stops a sweep as Ctrl+C does: the running trial is queued again
    from study.progress import Progress
    from study.sweep import Interrupted, run_sweep

    overrides = dict(parse_override(item) for item in args.set or [])
    sweep = load_sweep(args.sweep, overrides)
    store = _store(args)
    progress = None if args.quiet else Progress()
    run = lambda trials: run_sweep(  # noqa: E731
        sweep, store, trials=args.trials if trials is None else trials, timeout=args.timeout, workers=args.workers,
        allow_changed=args.allow_changed, progress=progress,
    )
    decided = None
    try:
        if args.until_decided:
            from study.decide import DEFAULT_MAX_SEEDS, run_until_decided

            decided = run_until_decided(sweep, store, DEFAULT_MAX_SEEDS if args.max_seeds is None else args.max_seeds, run)
            summary = decided.summary
        else:
            summary = run(None)
    except Interrupted as exc:
        summary = exc.args[0]
        resume = f"{_self_command()} {shlex.join(map(redact, args.argv))}"  # a command that works from this shell
        print(
            f"interrupted: {summary.name} stopped; the trials that were running were marked failed and queued to run again; "
            f"{summary.counts.done} of {summary.target or '?'} trials are done. Resume with:\n  {resume}",
            file=sys.stderr,
        )
        return 130
    if interrupted():  # a Ctrl+C that came after the last safe point: the work is done, but it was asked to stop
        print("interrupted", file=sys.stderr)
        return 130
    print(render_summary(summary, sweep))
    if decided is not None:
        seeds = sweep.config.replicates * (1 + len(decided.rounds))
        print(f"until decided: {len(decided.rounds)} round(s) of new seeds, {seeds} seeds per setting; every look tests at "
              f"5% / {decided.looks}")
        for line in decided.undecided:
            print(f"  undecided: {line}")
    print("\n".join(where_to_look(summary.name, summary.experiment_id, store, _given_store_options(args))))
    return 0


def _self_command() -> str:
    """How to run `study` again from this shell: `study` when that is on the PATH and is this
    program, else the path this one was started by (e.g. `.venv/bin/study`)."""
    program = Path(sys.argv[0])
    on_path = shutil.which("study")
    if program.name == "study" and on_path and Path(on_path).resolve() == program.resolve():
        return "study"
    if program.name == "study":
        try:
            return str(program.resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(program.resolve())
    return f"{sys.executable} -m study"


def _given_store_options(args) -> list[str]:
    """The store options of this command line, as the user gave them (options from the environment
    hold in the same shell), to repeat in the commands we print: a password shows as ***."""
    options = []
    for name in ("store", "tracking_uri", "storage", "artifacts"):
        if value := getattr(args, name, None):
            options += [f"--{name.replace('_', '-')}", redact(value)]
    return options


def where_to_look(name: str, experiment_id: str | None, store: Store, options: list[str]) -> list[str]:
    """The commands that write the sweep's report and open its runs in this store's MLflow UI, with
    the store options as given (`options`): every local store numbers its first experiment 1, so
    the link only shows this sweep in a UI serving this store."""
    program = _self_command()
    lines = [f"report:  {' '.join([program, 'report', shlex.quote(name), *map(shlex.quote, options)])}"]
    ui = store_ui(store, options=options, program=program)
    if ui is not None and ui.command:
        lines.append(f"browse:  {ui.command}   then open {ui.link(experiment_id)}")
    elif ui is not None:
        lines.append(f"browse:  open {ui.link(experiment_id)}   (the tracking server's own UI)")
    return lines


def render_summary(summary, sweep, store: Store | None = None, options: list[str] | None = None) -> str:
    """What a sweep did; with `store`, then where to look (where_to_look, with the store `options` as given)."""
    c = summary.counts
    lines = [
        f"{summary.name}: {summary.state} — {c.done} trials done ({c.finished} finished, {c.pruned} pruned, "
        f"{c.failed} failed) in {_duration(summary.seconds)}"
    ]
    for trial in summary.best[:5]:
        values = ", ".join(f"{m} {v:.4g}" for m, v in zip(sweep.metrics, trial.values))
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        label = "best" if len(summary.best) == 1 else "Pareto"
        lines.append(f"{label}: trial {trial.number}: {values}" + (f" ({params})" if params else ""))
    for trial in summary.failed[:5]:  # failed for good: named, with the first line of why
        reason = (trial.user_attrs.get("study_reason") or "no reason recorded").splitlines()[0][:200]
        params = ", ".join(f"{k}={v}" for k, v in trial.params.items())
        lines.append(f"failed: trial {trial.number}" + (f" ({params})" if params else "") + f": {reason}")
    if len(summary.failed) > 5:
        lines.append(f"... and {len(summary.failed) - 5} more failed trials (study list, or the report)")
    if summary.state == "exhausted":
        lines.append("the sampler found no settings left that have not run: the search space is used up")
    if summary.state == "partial":
        lines.append(f"the time budget ran out; run the same command again to continue to {summary.target} trials")
    if store is not None:
        lines += where_to_look(summary.name, summary.experiment_id, store, options or [])
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- init
def cmd_init(args) -> int:
    from study.budget import target_trials
    from study.sweep import prepare

    sweep = load_sweep(args.sweep, dict(parse_override(item) for item in args.set or []))
    store = _store(args)
    study, _, _ = prepare(sweep, store, args.allow_changed)
    print(
        f"ready: study {sweep.name!r} in {store.describe()} ({len(study.trials)} trials so far, budget "
        f"{target_trials(sweep) or 'by time'}); start workers on any machine with the same store options:\n"
        f"  study run {args.sweep}"
    )
    return 0


# ------------------------------------------------------------------------------- validate
def cmd_validate(args) -> int:
    """Check every file given, one line each; exit 2 if any is not a valid sweep."""
    from study.budget import target_trials
    from study.search import grid_size

    bad = 0
    for path in args.files:
        try:
            sweep = load_sweep(path)
        except StudyError as exc:
            for problem in getattr(exc, "problems", [str(exc)]):
                print(f"error: {problem}", file=sys.stderr)
            bad += 1
            continue
        config = sweep.config
        columns: list[str] = []
        # a user's file must exist and hold the target; the training split, the examples asked of it
        train_count, searched_counts = sweep.train_count(), sweep.searched_train_counts()
        if config.dataset.name == "csv" or train_count is not None or searched_counts:
            from study.datasets import describe_columns, load_for_objective

            try:
                data = load_for_objective(config.dataset, config.seed, sweep.path.parent, sweep.metrics, train_count)
            except StudyError as exc:
                print(f"error: {path}: {exc}", file=sys.stderr)
                bad += 1
                continue
            columns = describe_columns(data)
            too_many = [count for count in searched_counts if count > len(data.x_train)]
            if too_many:
                print(f"warning: {path}: dataset.train_size: {max(too_many)} (searched) exceeds the {len(data.x_train)} "
                      "training examples available: the trials that ask for it will fail; lower it or make the "
                      "dataset larger", file=sys.stderr)
        searched = ", ".join(sweep.searched) or "nothing"
        size = grid_size(sweep)
        sampler = f"{config.sampler.name}" + (f" ({size} points)" if size else "")
        target = target_trials(sweep)
        budget = f"{target} trials" if target else "no trial limit"
        if config.budget.timeout:
            budget += f", {_duration(config.budget.timeout)} per run"
        objective = ", ".join(f"{m} ({d})" for m, d in config.objective.items())
        print(
            f"ok: {path}: {sweep.name} on {config.dataset.name}; searches {searched}; sampler {sampler}, "
            f"pruner {config.pruner.name}; {budget} × {config.replicates} replicate(s); objective {objective}"
        )
        for line in columns:  # a csv's features and target, as the sweep will use them
            print(line)
        unread = sweep.unread_compress_knobs()
        if unread:
            them = "it" if len(unread) == 1 else "them"
            print(f"warning: {path}: {', '.join('compress.' + k for k in unread)}: set, but no trial of this sweep "
                  f"reads {them} at any method, bit-width, scheme or structure it takes; remove {them}, or "
                  f"choose a method that reads {them}, in the file or with --set compress.method=...", file=sys.stderr)
        for metric in (m for m in config.objective if names.on_test_set(m)):
            twin = names.validation_twin(metric)
            print(f"warning: {path}: objective {metric} is measured on the test split, so the trials chosen by it are "
                  f"chosen on the test set and its numbers flatter them; optimize "
                  f"{twin or 'a val/ metric'} and let the test split only report", file=sys.stderr)
    return 2 if bad else 0


# ----------------------------------------------------------------------------------- list
def cmd_list(args) -> int:
    from study.listing import list_sweeps

    rows = list_sweeps(_store(args), Path(args.sweeps))
    if not rows:
        print(f"no sweeps: no sweep files in {args.sweeps}/ and no studies in the store")
        return 0
    header = ("sweep", "file", "finished", "pruned", "failed", "interrupted", "running", "best", "check")
    table = [header] + [tuple(str(v) for v in row) for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) if i in (0, 1, 7, 8) else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    return 0


# --------------------------------------------------------------------------------- report
def cmd_report(args) -> int:
    from study.report.build import build_index, build_report

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: a file, not a folder; give a folder for the reports")
    store = _store(args)
    built = [build_report(store, name, out, args.mlflow_url) for name in dict.fromkeys(args.sweeps)]
    for report in built:
        print(f"{report.name}: {report.path}  ({report.summary}; built in {report.seconds:.1f}s)")
    if len(built) > 1:
        print(f"index: {build_index(out, built)}")
    ui = store_ui(store, args.mlflow_url, _given_store_options(args), _self_command())
    if ui is not None:  # where the run links open; with `study ui`, serving this store
        print(f"run links: {ui.command + '   then open ' if ui.command else 'open '}{ui.link()}")
    return 0


# ------------------------------------------------------------------------------------- ui
def cmd_ui(args) -> int:
    """Serve the MLflow UI until Ctrl+C or SIGTERM; the server stops with this process."""
    from study.processes import terminate_as_interrupt
    from study.serve import serve_ui

    store = _store(args)
    if store.is_local and not (store.root / "mlflow.db").exists():
        raise BadInput(f"no MLflow store in {store.root} yet; run a sweep first (study run sweeps/demo.yaml), or give --store")
    terminate_as_interrupt()
    return serve_ui(store, args.host, args.port, args.workers)


# --------------------------------------------------------------------------------- parser
def _duration_argument(text: str) -> float:
    """--timeout's value, written as the sweep file's budget.timeout is."""
    from pydantic import ValidationError

    from study.schema import Budget

    try:
        seconds = Budget.model_validate({"timeout": text}).timeout
    except ValidationError as exc:  # a duration of 0 or less reads as one, then fails Budget's bound
        if exc.errors()[0]["type"] == "greater_than":
            raise argparse.ArgumentTypeError(f"{text!r}: a timeout must be more than 0; write seconds (600) or 90s, 10m, 1.5h") from None
        seconds = None
    if seconds is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write seconds (600) or 90s, 10m, 1.5h")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="study", description="Sweep studies of overfitting, underfitting and compression, tracked in MLflow."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="create or resume a sweep and run it to its budget")
    run.add_argument("sweep", metavar="SWEEP.yaml")
    run.add_argument("--trials", type=int, metavar="N", help="complete the sweep to N done trials (default: its budget)")
    run.add_argument("--timeout", type=_duration_argument, metavar="DURATION",
                     help="start no trial after this long: seconds (600) or 90s, 10m, 1.5h")
    run.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes on this machine (default 1)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. train.epochs=5 (repeatable)")
    run.add_argument("--allow-changed", action="store_true", help="continue a study although its sweep file changed")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--until-decided", action="store_true",
                     help="add seeds to every setting, a round of `replicates` at a time, until the report's claims are decided")
    run.add_argument("--max-seeds", type=int, default=None, metavar="N",
                     help="with --until-decided: at most N seeds per setting (default 12)")
    _store_options(run)
    run.set_defaults(func=cmd_run)

    init = commands.add_parser(
        "init", help="create the stores, study and experiment once, before workers on several machines start"
    )
    init.add_argument("sweep", metavar="SWEEP.yaml")
    init.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting (as for run)")
    init.add_argument("--allow-changed", action="store_true", help="accept a sweep file changed since the study began")
    _store_options(init)
    init.set_defaults(func=cmd_init)

    validate = commands.add_parser("validate", help="check sweep files without running them")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(func=cmd_validate)

    listing = commands.add_parser("list", help="sweep files and studies, with trial counts per state")
    listing.add_argument("--sweeps", default="sweeps", metavar="DIR", help="folder of sweep files (default sweeps)")
    _store_options(listing)
    listing.set_defaults(func=cmd_list)

    report = commands.add_parser("report", help="write the HTML report of one or more sweeps")
    report.add_argument("sweeps", nargs="+", metavar="SWEEP", help="sweep names (the sweep files' stems)")
    report.add_argument("--out", default="reports", metavar="DIR", help="folder for the reports (default reports)")
    report.add_argument("--mlflow-url", metavar="URL",
                        help="the MLflow UI that run links open (default: the store's tracking server, else "
                             f"{LOCAL_UI}, where `study ui` serves it)")
    _store_options(report)
    report.set_defaults(func=cmd_report)

    ui = commands.add_parser("ui", help="serve the MLflow UI on the store (127.0.0.1 only)")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ui.add_argument("--workers", type=int, default=1, metavar="N", help="server processes answering requests (default 1)")
    _store_options(ui)
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code. After a Ctrl+C (or SIGTERM) any error exits 130 as the
    interruption does: the signal can land where a library swallows it and fails later instead
    (inside a query, SQLAlchemy invalidates the connection; in a finalizer, Python drops the
    KeyboardInterrupt; the next query then raises "Can't reconnect until invalid transaction is
    rolled back")."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    for name in ("trials", "workers"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            print(f"error: --{name} must be at least 1, got {value}", file=sys.stderr)
            return 2
    if getattr(args, "max_seeds", None) is not None and not args.until_decided:
        print("error: --max-seeds is read only with --until-decided; add --until-decided or drop --max-seeds", file=sys.stderr)
        return 2
    try:
        code = args.func(args) or 0
        sys.stdout.flush()  # a reader gone (`| head -1`) shows here, not as a traceback at exit
        return code
    except BrokenPipeError:  # the reader of our output left: nothing more to say (Python's docs' recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if interrupted():  # an error after a Ctrl+C is its consequence: stop as asked
            print("interrupted", file=sys.stderr)
            return 130
        return _failure(exc, args)


def _failure(exc: Exception, args) -> int:
    """Print the error the command stopped on; its exit code (2: input to fix, 1: anything else)."""
    if isinstance(exc, BadInput):  # a sweep file, --set value or data file to fix
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2
    if isinstance(exc, StudyError):
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 1
    from study.store import DISK_FULL, disk_full

    message = _store(args, check=False).explain(exc) if hasattr(args, "store") else DISK_FULL if disk_full(exc) else None
    if message is None:
        raise exc  # a bug: keep its traceback
    print(f"error: {message}", file=sys.stderr)  # a full disk, a damaged database
    return 1


if __name__ == "__main__":
    sys.exit(main())
