"""Every file a compression sweep wrote, one line each: how it was made, its bytes (raw and gzip),
its own test accuracy and its median latency on LiteRT (with the interquartile range). The
README's method rows come from this, after `benchmarks/shipped_sweeps.py` filled the store.

    .venv/bin/python benchmarks/compression_files.py [--store /tmp/study-shipped] SWEEP [SWEEP ...]
"""

from __future__ import annotations

import argparse
import os
import platform

import pandas as pd

from study.names import Role, Tag
from study.store import Store

SETTINGS = ["method", "structure", "sparsity", "criterion", "bits", "scheme"]
MEASURED = {
    "artifact/size_bytes": "bytes", "artifact/gzip_bytes": "gzip", "model/params": "params",
    "artifact/test_accuracy": "accuracy", "artifact/latency_ms": "latency ms", "artifact/latency_iqr_ms": "IQR ms",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+")
    parser.add_argument("--store", default="/tmp/study-shipped")
    args = parser.parse_args()
    client = Store.resolve(args.store).mlflow()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; store {args.store}")
    pd.set_option("display.width", 250)
    for name in args.sweeps:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            print(f"{name}: not in this store")
            continue
        runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{Tag.ROLE}` = '{Role.TRIAL}'")
        rows = []
        for run in runs:
            row = {k: run.data.params.get(f"compress.{k}", "") for k in SETTINGS}
            row.update({label: run.data.metrics.get(key) for key, label in MEASURED.items()})
            row["file"] = run.data.tags.get(Tag.ARTIFACT, "").split(" (")[0]
            row["state"] = run.data.tags.get(Tag.STATE, "")
            rows.append(row)
        table = pd.DataFrame(rows).sort_values(["method", "structure", "bits", "scheme", "sparsity"])
        table = table.loc[:, (table != "").any()]  # settings no trial of this sweep reads
        print(f"\n{name} ({len(table)} trials)")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
