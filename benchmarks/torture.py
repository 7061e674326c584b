"""Two local workers killed at random moments, then one clean run: is the sweep exact?

Two `study run` processes share one local store and a 30-point grid. At random moments (seeded)
one of them, or both at once, is killed with SIGKILL and started again, `--kills` times in all.
Then both run once more, untouched, and the stores are checked from the outside:

- the budget exactly: as many done trials as grid points, every point finished exactly once;
- one finished MLflow run per finished trial (nothing trained to the end twice), nothing left
  RUNNING in Optuna or MLflow, and both clean runs exit 0 saying "complete".

    python benchmarks/torture.py --kills 50            # the README's figures
    python benchmarks/torture.py --kills 6 --points 12 # the suite's short version

Heartbeats are fast here (1 s, 3 s grace) so that dead workers' trials are settled quickly.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAST_BEATS = {"STUDY_HEARTBEAT_SECONDS": "1", "STUDY_GRACE_SECONDS": "3"}
WIDTHS = [4, 6, 8, 10, 12, 14, 16, 20, 24, 32]


def sweep_text(points: int) -> str:
    """A grid of `points` points (a multiple of 3, at most 30): widths × depths 1, 2, 3."""
    widths = WIDTHS[: max(1, points // 3)]
    return textwrap.dedent(f"""
        description: torture test grid
        dataset: {{name: mnist1d, num_samples: 1000}}
        model: {{kind: mlp, width: 8, depth: 1}}
        train: {{epochs: 40, batch_size: 64}}
        search:
          model.width: {widths}
          model.depth: [1, 2, 3]
        objective: {{val/accuracy: maximize}}
        sampler: grid
        pack: 4
    """)


def start(folder: Path, sweep: Path) -> subprocess.Popen:
    env = {**os.environ, **FAST_BEATS, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "study", "run", str(sweep), "--store", "store", "--quiet"],
                            cwd=folder, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=120)


def torture(folder: Path, kills: int, points: int, seed: int, shortest: float = 4.0, longest: float = 16.0) -> dict:
    """Run the torture in `folder`; returns the figures (see the module doc)."""
    sweep = folder / "torture.yaml"
    sweep.write_text(sweep_text(points))
    rng = random.Random(seed)
    began = time.time()
    procs = [start(folder, sweep), start(folder, sweep)]
    done_kills = group_kills = 0
    while done_kills < kills:
        time.sleep(rng.uniform(shortest, longest))  # from startup (about 8 s here) to the middle of training
        whole = rng.random() < 0.25
        victims = [0, 1] if whole else [rng.randrange(2)]
        for i in victims:
            if procs[i].poll() is None:
                stop(procs[i])
                done_kills += 1
            else:
                procs[i].communicate(timeout=120)
            procs[i] = start(folder, sweep)
        group_kills += whole
    for proc in procs:
        stop(proc)
    tortured = time.time() - began
    final = [start(folder, sweep), start(folder, sweep)]
    outputs = [p.communicate(timeout=1800) for p in final]
    return {
        "kills": done_kills, "kills_of_both": group_kills, "tortured_s": round(tortured),
        "clean_run_s": round(time.time() - began - tortured),
        "exit_codes": [p.returncode for p in final],
        "said_complete": sum(" complete " in out for out, _ in outputs),
        "errors": [err.strip().splitlines()[-1] for _, err in outputs if err.strip()],
        **check(folder / "store", "torture", points),
    }


def check(store_path: Path, name: str, points: int) -> dict:
    """What the stores hold, read from the outside (Optuna's and MLflow's own clients)."""
    import optuna
    from mlflow import MlflowClient

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{store_path / 'optuna.db'}")
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    settings = Counter(json.dumps(t.params, sort_keys=True) for t in complete)
    client = MlflowClient(tracking_uri=f"sqlite:///{store_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    trial_runs = [r for r in runs if r.data.tags.get("study.role") == "trial"]
    finished_runs = [r for r in trial_runs if r.info.status == "FINISHED"]
    return {
        "grid_points": points,
        "points_finished": len(settings),
        "points_finished_twice": sum(1 for n in settings.values() if n > 1),
        "optuna_trials": len(trials),
        "trials_retried": sum(1 for t in trials if t.system_attrs.get("retry_history")),
        "optuna_running": sum(1 for t in trials if t.state == optuna.trial.TrialState.RUNNING),
        "optuna_waiting": sum(1 for t in trials if t.state == optuna.trial.TrialState.WAITING),
        "mlflow_trial_runs": len(trial_runs),
        "mlflow_finished_runs": len(finished_runs),
        "mlflow_running_runs": sum(1 for r in runs if r.info.status == "RUNNING"),
        "finished_runs_match_trials": sorted(t.user_attrs.get("mlflow_run_id", "") for t in complete)
        == sorted(r.info.run_id for r in finished_runs),
    }


def sound(figures: dict) -> bool:
    points = figures["grid_points"]
    return (figures["exit_codes"] == [0, 0] and figures["points_finished"] == points
            and figures["points_finished_twice"] == 0 and figures["optuna_running"] == 0
            and figures["mlflow_finished_runs"] == points and figures["mlflow_running_runs"] == 0
            and figures["finished_runs_match_trials"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=50, help="SIGKILLs of one or both workers (default 50)")
    parser.add_argument("--points", type=int, default=30, help="grid points, a multiple of 3 up to 30 (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments (default 0)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="torture-") as tmp:
        figures = torture(Path(tmp), args.kills, args.points, args.seed)
    for key, value in figures.items():
        print(f"{key:28s} {value}")
    print("sound" if sound(figures) else "NOT SOUND")
    return 0 if sound(figures) else 1


if __name__ == "__main__":
    sys.exit(main())
