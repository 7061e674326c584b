"""`study.results(sweep)`: a sweep's trials as a pandas DataFrame, for a notebook.

The table is the one `study report` writes as runs.csv, built by the report's own code (one row
per trial run: params, metrics, tags, state and regime columns), with plain column names: a
setting as the sweep file names it (`model.width`), a metric by its key (`val/accuracy`); tags
keep their prefix (`tags.study.state`), since their names look like settings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from study.store import Store

if TYPE_CHECKING:
    import pandas as pd

PLAIN = ("params.", "metrics.")  # the prefixes dropped; a setting is dotted and a metric has a slash, so they never meet


def plain_columns(columns) -> dict[str, str]:
    """runs.csv's column -> its plain name, for the `params.` and `metrics.` columns whose name
    without the prefix is not already a column (those keep theirs)."""
    taken = {str(c) for c in columns}
    renamed: dict[str, str] = {}
    for column in map(str, columns):
        prefix = next((p for p in PLAIN if column.startswith(p)), None)
        if prefix is None:
            continue
        plain = column.removeprefix(prefix)
        if plain and plain not in taken and plain not in renamed.values():
            renamed[column] = plain
    return renamed


def sweep_name(sweep: str | os.PathLike) -> str:
    """A sweep's name: given as is, or its sweep file's stem (`sweeps/demo.yaml` is `demo`)."""
    path = Path(sweep)
    return path.stem if path.suffix in (".yaml", ".yml") else str(sweep)


def results(sweep: str | os.PathLike, store: Store | str | os.PathLike | None = None) -> pd.DataFrame:
    """Sweep `sweep`'s trials as a DataFrame, one row per trial run (runs.csv's table).

    `sweep` is a name or a sweep file; `store` a `study.store.Store` or a local store's folder
    (default: $STUDY_STORE, else mlruns/, as `study` uses). An unknown sweep is a StudyError that
    lists the known ones.
    """
    from study.report import sections
    from study.report.load import load_sweep_runs
    from study.report.render import runs_table

    found = store if isinstance(store, Store) else Store.resolve(None if store is None else Path(store))
    data = load_sweep_runs(found, sweep_name(sweep))
    table = runs_table(data.runs, sections.compute_report(data).conclusions)
    return table.rename(columns=plain_columns(table.columns))
