"""`study ui`: the MLflow UI server on a store, started as a child that stops with us."""

from __future__ import annotations

import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from study.errors import StudyError
from study.processes import die_with_parent
from study.store import Store, _sqlite_url, redact

START_SECONDS = 180  # a cold MLflow server takes a while to import and migrate
UI_PORT = 5000  # `study ui`'s default port
LOCAL_UI = f"http://127.0.0.1:{UI_PORT}"  # where `study ui` serves by default


def ui_link(base_url: str, experiment_id: str | None = None, run_id: str | None = None) -> str:
    """The MLflow UI's page of an experiment's runs (or of one run, or of every experiment),
    opened in the Model training view."""
    path = "/#/experiments"
    if experiment_id is not None:
        path += f"/{experiment_id}/runs" + (f"/{run_id}" if run_id else "")
    return f"{base_url.rstrip('/')}{path}?workflowType=machine_learning"


@dataclass(frozen=True)
class StoreUI:
    """The MLflow UI that shows one store's runs: its address (never with credentials in it) and,
    where `study ui` serves that address, the command that serves this store there."""

    url: str
    command: str = ""  # `study ui --store DIR`: "" for a tracking server (its own UI) or another given address
    server: bool = False  # the address is the store's own tracking server

    def link(self, experiment_id: str | None = None, run_id: str | None = None) -> str:
        return ui_link(self.url, experiment_id, run_id)


def is_server(tracking_uri: str) -> bool:
    """Whether MLflow's tracking URI is a server over HTTP, which serves its own UI."""
    return tracking_uri.startswith(("http://", "https://"))


def server_address(tracking_uri: str) -> str:
    """An http(s) tracking server's address without its user, password, query or fragment: the
    address of its UI, fit to print and to link to (the browser asks for credentials itself)."""
    parts = urlsplit(tracking_uri)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def ui_options(store: Store) -> list[str] | None:
    """The store options with which `study ui` serves `store`, written out in full (the folder's
    absolute path, a database URL with its password hidden); None for a store whose UI `study ui`
    is not (an http tracking server serves its own; Databricks has its own)."""
    if is_server(store.tracking_uri) or store.tracking_uri.startswith("databricks"):
        return None
    if store.tracking_uri == _sqlite_url(store.root / "mlflow.db"):
        return ["--store", str(store.root)]
    return ["--tracking-uri", redact(store.tracking_uri)]


def served_port(url: str) -> int | None:
    """The port when `url` is an address `study ui` serves (http on 127.0.0.1 or localhost, at the
    root), else None."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost") or parts.path.strip("/"):
        return None
    try:
        return parts.port or 80
    except ValueError:
        return None


def store_ui(store: Store, mlflow_url: str | None = None, options: list[str] | None = None,
             program: str = "study") -> StoreUI | None:
    """Where `store`'s runs are browsed: `mlflow_url` when one is given, else the store's own
    tracking server (http or https), else where `study ui` serves it (LOCAL_UI); None when no
    address is known (Databricks). Where `study ui` serves the address, the command that serves
    THIS store there comes with it: every local store numbers its first experiment 1, so another
    store's UI at the same address would answer this store's run links with "Run ID ... does not
    exist". `options`: the store options to write in that command (as the user gave them); by
    default read off the store (ui_options). `program`: how to call study (cli._self_command)."""
    servable = ui_options(store)
    if not mlflow_url:
        if is_server(store.tracking_uri):
            return StoreUI(server_address(store.tracking_uri), server=True)
        if servable is None:
            return None
        mlflow_url = LOCAL_UI
    port = served_port(mlflow_url)
    if servable is None or port is None:
        own = is_server(store.tracking_uri) and mlflow_url.rstrip("/") == server_address(store.tracking_uri).rstrip("/")
        return StoreUI(mlflow_url, server=own)
    words = [*map(shlex.quote, servable if options is None else options), *(["--port", str(port)] if port != UI_PORT else [])]
    return StoreUI(mlflow_url, " ".join([program, "ui", *words]))


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
