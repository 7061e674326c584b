"""`study ui`: the MLflow UI server on a store, started as a child that stops with us."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from study.errors import StudyError
from study.processes import die_with_parent
from study.store import Store

START_SECONDS = 180  # a cold MLflow server takes a while to import and migrate


def ui_link(base_url: str, experiment_id: str | None = None, run_id: str | None = None) -> str:
    """The MLflow UI's page of an experiment's runs (or of one run, or of every experiment),
    opened in the Model training view."""
    path = "/#/experiments"
    if experiment_id is not None:
        path += f"/{experiment_id}/runs" + (f"/{run_id}" if run_id else "")
    return f"{base_url.rstrip('/')}{path}?workflowType=machine_learning"


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def server_command(store: Store, host: str, port: int, workers: int = 1) -> list[str]:
    """`mlflow server` on the store: one worker answers one user well, and each costs a process
    and its memory (MLflow's default is 4)."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store.tracking_uri,
               "--host", host, "--port", str(port), "--workers", str(workers)]
    if store.artifact_root:
        command += ["--default-artifact-root", store.artifact_root]
    return command


def serve_ui(store: Store, host: str, port: int, workers: int = 1) -> int:
    """Start `mlflow server` on the store, pass its output on to stderr, print its address once it
    answers and its startup output has ended (so the address is the last line), and wait; Ctrl+C
    or SIGTERM (as KeyboardInterrupt) stops it and every process it started."""
    if not port_free(host, port):
        raise StudyError(f"port {port} on {host} is in use (another server?); pick another with --port")
    parent = os.getpid()
    env = dict(os.environ)
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # GenAI jobs: a runner and its consumers, which our runs never use
    server = subprocess.Popen(server_command(store, host, port, workers), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=env, start_new_session=True, preexec_fn=lambda: die_with_parent(parent))
    assert server.stdout is not None
    output = server.stdout.fileno()
    url = f"http://{host}:{port}"
    try:
        print(f"starting the MLflow UI for {store.describe()} ...", flush=True)
        deadline = time.monotonic() + START_SECONDS
        while not _answers(url):
            if server.poll() is not None:
                _settle(output, 0.2, 2)  # its last words say why
                raise StudyError(f"the MLflow server exited with status {server.returncode} before answering")
            if time.monotonic() > deadline:
                raise StudyError(f"the MLflow server did not answer at {url} within {START_SECONDS}s")
            if _copy(output, 0.5) is False:
                time.sleep(0.5)
        _settle(output, QUIET_SECONDS, SETTLE_SECONDS)
        print(f"MLflow UI at {ui_link(url)}  (Ctrl+C to stop)", flush=True)
        while server.poll() is None and _copy(output, 1.0) is not False:
            pass
        code = server.wait()
        return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else 1
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(server)
        server.stdout.close()


QUIET_SECONDS = 1.0  # the server's startup output has ended when it has said nothing this long after answering
SETTLE_SECONDS = 10  # ... or this long after it first answered, whatever it still says


def _copy(fd: int, wait: float) -> bool | None:
    """Pass on what the server writes within `wait` seconds to our stderr: True if it wrote,
    None if it said nothing, False at the end of its output."""
    ready, _, _ = select.select([fd], [], [], wait)
    if not ready:
        return None
    chunk = os.read(fd, 65536)
    if not chunk:
        return False
    target = getattr(sys.stderr, "buffer", None)
    if target is not None:
        sys.stderr.flush()
        target.write(chunk)
    else:  # a stream without bytes (a test's capture)
        sys.stderr.write(chunk.decode(errors="replace"))
    sys.stderr.flush()
    return True


def _settle(fd: int, quiet: float, limit: float) -> None:
    """Pass on the server's output until it has said nothing for `quiet` seconds, or for `limit`."""
    end = time.monotonic() + limit
    while time.monotonic() < end and _copy(fd, quiet):
        pass


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except Exception:
        return False


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's whole process group (its workers too), then SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return  # the group is empty
        try:
            server.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(0.5)  # the leader is gone; its workers get the next signal if they linger
