"""`study list`: the sweep files of a folder and the studies of a store, with trial counts."""

from __future__ import annotations

from pathlib import Path

from study.errors import StudyError
from study.store import Store


def best_summary(study) -> str:
    """'val/accuracy 0.877 (maximize, trial 10)', or the size of a multi-objective study's Pareto
    set; `study list` and the report index both say it this way."""
    metrics = study.user_attrs.get("metrics") or ["value"]
    try:
        if len(study.directions) > 1:
            return f"Pareto set of {len(study.best_trials)} ({', '.join(metrics)})"
        direction = study.directions[0].name.lower()
        return f"{metrics[0]} {study.best_value:.4g} ({direction}, trial {study.best_trial.number})"
    except ValueError:
        return "no finished trial"


def check(study, path: Path | None) -> str:
    """'complete', 'partial (done/target)', or what keeps a sweep that reached its budget from
    being complete (`budget.audit`, as `study run` checks it)."""
    from study.budget import audit, target_trials
    from study.config import load_sweep
    from study.ledger import count_trials
    from study.names import Attr

    if path is None:
        return "no sweep file to check against"
    try:
        sweep = load_sweep(path)
    except StudyError:
        return f"{path} does not load"
    target = target_trials(sweep, None, len(study.user_attrs.get(Attr.ROUNDS, [])))
    done = count_trials(study.get_trials(deepcopy=False)).done
    if target is not None and done < target:
        return f"partial ({done}/{target})"
    problems = audit(study, sweep, target)
    return "not complete: " + "; ".join(problems) if problems else "complete"


def list_sweeps(store: Store, folder: Path) -> list[tuple]:
    """Rows (sweep, file, finished, pruned, failed, interrupted, running, best, check), sweeps with
    files first. Interrupted trials were queued again and are not done; with the failed ones they
    make the sweep's FAILED runs in MLflow."""
    import optuna

    from study.ledger import count_trials
    from study.store import quiet_libraries

    files = {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}
    studies = {}
    has_store = not store.is_local or (store.root / "optuna.db").exists()
    if has_store:
        quiet_libraries()
        try:
            storage = store.optuna()
            for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
                studies[summary.study_name] = optuna.load_study(study_name=summary.study_name, storage=storage)
        except StudyError:
            raise
        except Exception as exc:
            raise StudyError(f"cannot read the studies in {store.describe()}: {exc}") from None
    rows: list[tuple] = []
    for name in [*files, *sorted(set(studies) - set(files))]:
        file = str(files[name]) if name in files else "(no file)"
        if name not in studies:
            rows.append((name, file, "-", "-", "-", "-", "-", "not started", "-"))
            continue
        study = studies[name]
        c = count_trials(study.get_trials(deepcopy=False))
        rows.append((name, file, c.finished, c.pruned, c.failed, c.interrupted, c.running, best_summary(study),
                     check(study, files.get(name))))
    return rows
