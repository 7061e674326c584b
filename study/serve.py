"""`study ui`: the MLflow UI server on a store, started as a child that stops with us."""

from __future__ import annotations

import os
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


def serve_ui(store: Store, host: str, port: int) -> int:
    """Start `mlflow server` on the store, print its address once it answers, and wait; Ctrl+C or
    SIGTERM (as KeyboardInterrupt) stops it and every process it started."""
    if not port_free(host, port):
        raise StudyError(f"port {port} on {host} is in use (another server?); pick another with --port")
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store.tracking_uri,
               "--host", host, "--port", str(port)]
    if store.artifact_root:
        command += ["--default-artifact-root", store.artifact_root]
    parent = os.getpid()
    server = subprocess.Popen(command, start_new_session=True, preexec_fn=lambda: die_with_parent(parent))
    url = f"http://{host}:{port}"
    try:
        print(f"starting the MLflow UI for {store.describe()} ...", flush=True)
        deadline = time.monotonic() + START_SECONDS
        while not _answers(url):
            if server.poll() is not None:
                raise StudyError(f"the MLflow server exited with status {server.returncode} before answering")
            if time.monotonic() > deadline:
                raise StudyError(f"the MLflow server did not answer at {url} within {START_SECONDS}s")
            time.sleep(0.5)
        print(f"MLflow UI at {ui_link(url)}  (Ctrl+C to stop)", flush=True)
        code = server.wait()
        return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else 1
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(server)


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
