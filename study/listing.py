"""`study list`: the sweep files of a folder and the studies of a store, with trial counts."""

from __future__ import annotations

from pathlib import Path

from study.errors import StudyError
from study.store import Store


def _best(study) -> str:
    metrics = study.user_attrs.get("metrics") or []
    try:
        if len(study.directions) > 1:
            return f"Pareto set of {len(study.best_trials)}"
        value = study.best_value
    except ValueError:
        return "-"
    name = metrics[0] if metrics else "value"
    return f"{name} {value:.4g}"


def list_sweeps(store: Store, folder: Path) -> list[tuple]:
    """Rows (sweep, file, finished, pruned, failed, interrupted, running, best), sweeps with files
    first. Interrupted trials were queued again and are not done; with the failed ones they make
    the sweep's FAILED runs in MLflow."""
    import optuna

    from study.store import quiet_libraries
    from study.sweep import count_trials

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
    rows = []
    for name in [*files, *sorted(set(studies) - set(files))]:
        file = str(files[name]) if name in files else "(no file)"
        if name not in studies:
            rows.append((name, file, "-", "-", "-", "-", "-", "not started"))
            continue
        study = studies[name]
        c = count_trials(study.get_trials(deepcopy=False))
        rows.append((name, file, c.finished, c.pruned, c.failed, c.interrupted, c.running, _best(study)))
    return rows
