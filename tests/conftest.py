"""Shared fixtures: temporary stores, a session-wide data cache, sweep files written on the fly.

Tests use real MLflow and Optuna stores (SQLite files in a temporary folder), tiny data and one
or two epochs, so that a trial takes about a second.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDY = [sys.executable, "-m", "study"]


@pytest.fixture
def ctrl_c_recorded():
    """Ctrl+C recorded as `study run` records it (`processes.catch_interrupts`), from an empty
    record; the previous handler and an empty record are restored after. Yields `study.processes`."""
    import signal

    from study import processes

    before = signal.getsignal(signal.SIGINT)
    processes._received.clear()
    processes.catch_interrupts()
    try:
        yield processes
    finally:
        signal.signal(signal.SIGINT, before)
        processes._received.clear()


def unavailable(why: str):
    """Skip a test whose outside service is missing, saying why; in CI (CI=true), where .ci/run
    provides every service, fail instead, so that a green run has really run every test."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}: CI must run this test (.ci/run installs and starts what it needs)")
    pytest.skip(why)


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory):
    """Generated datasets go to a temporary cache, shared by the whole session."""
    folder = tmp_path_factory.mktemp("cache")
    os.environ["STUDY_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture
def store(tmp_path):
    from study.store import Store

    return Store.resolve(tmp_path / "store")


@pytest.fixture
def write_sweep(tmp_path):
    """write_sweep(name, yaml_text) -> path of a sweep file in a temporary folder."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(textwrap.dedent(text))
        return path

    return write


# A sweep small enough that each trial trains in about a second.
TINY = textwrap.dedent("""
    description: tiny test sweep
    dataset: {name: mnist1d, num_samples: 400}
    model: {kind: mlp, width: 8, depth: 1}
    train: {epochs: 2, batch_size: 64}
    search:
      model.width: [4, 8, 16]
      model.kind: [mlp, cnn]
    objective: {val/accuracy: maximize}
    sampler: grid
""")


def run_env(tmp_path: Path) -> dict:
    """Environment for `study` subprocesses: the session's data cache, no network lookups."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # e.g. an older Optuna
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _descendants(root: int) -> list[tuple[int, str]]:
    """(pid, command line) of every living process below `root`."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":  # zombies are dead, only not yet reaped
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, stack = [], list(children.get(root, []))
    while stack:
        pid = stack.pop()
        command = command_line(pid)
        if command is None:
            continue
        found.append((pid, command[:120]))
        stack.extend(children.get(pid, []))
    return found


def command_line(pid: int) -> str | None:
    """A process's command line, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


# The tiers (README, "Tests"). unit: pure logic on hand-made inputs, no TensorFlow, no store,
# seconds in all (files that say `pytestmark = pytest.mark.unit`; `make test-unit` runs just
# them). slow: end-to-end, real sweeps in subprocesses, servers, a browser. Everything else is
# integration: real MLflow and Optuna stores, tiny Keras models.


def pytest_sessionfinish(session, exitstatus):
    """The suite leaves no process running (no worker, no server): it fails if one is left. A
    unit-tier run fails if anything imported TensorFlow: that tier stays pure."""
    import time

    items = getattr(session, "items", [])
    if items and all(item.get_closest_marker("unit") for item in items) and "tensorflow" in sys.modules:  # make test-unit
        print("\nerror: a unit-tier test imported TensorFlow; move it to the integration tier", file=sys.stderr)
        session.exitstatus = 1

    deadline = time.time() + 15  # processes told to stop may take a moment
    left = _descendants(os.getpid())
    while left and time.time() < deadline:
        time.sleep(0.5)
        left = _descendants(os.getpid())
    if left:
        print(f"\nerror: the tests left {len(left)} process(es) running: {left}", file=sys.stderr)
        session.exitstatus = 1


def chromium_driver(tmp_path):
    """A headless Chromium from Debian's packages, driven by Selenium; skips (saying why) when absent."""
    browser, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver_path:
        unavailable("headless Chromium is not installed (apt-get install chromium chromium-driver; .ci/run does)")
    from selenium import webdriver  # a declared test dependency
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,2000", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def assert_legible_at_phone_and_desktop_widths(driver, path: Path) -> None:
    """At 420 and 1300 px: nothing wider than the viewport (tables scroll in their own box), the
    summary first; at 1300 px no figure shown below 80% of its size."""
    for width in (420, 1300):
        driver.set_window_size(width, 1600)
        driver.get(path.as_uri())
        inner = driver.execute_script("return window.innerWidth")
        wider = driver.execute_script(
            "const w = window.innerWidth; return Array.from(document.body.querySelectorAll('*'))"
            ".filter(e => !e.closest('.wide, pre') && e.getBoundingClientRect().right > w + 1)"
            ".map(e => e.tagName + '.' + e.className).slice(0, 5);")
        assert wider == [], f"wider than {inner} px: {wider}"
        assert driver.execute_script("return document.documentElement.scrollWidth") <= inner + 1
        first = driver.execute_script("return document.querySelector('h1').nextElementSibling.nextElementSibling.id")
        assert first == "summary", "the summary comes before the contents"
        if width == 1300:
            scaled = driver.execute_script(
                "return Array.from(document.images).map(i => i.clientWidth / i.naturalWidth).filter(r => r < 0.8);")
            assert scaled == [], f"figures shown below 80% of their size: {scaled}"


@pytest.fixture
def staged(write_sweep, store, monkeypatch):
    """A prepared sweep whose stale trials are noticed after one second: (sweep, study, tracker)."""
    from study import store as store_module
    from study.config import load_sweep
    from study.sweep import prepare

    monkeypatch.setattr(store_module, "GRACE_SECONDS", 1)
    sweep = load_sweep(write_sweep("staged", TINY))
    study, tracker, _ = prepare(sweep, store)
    return sweep, study, tracker


def settle_later(study, tracker, sweep) -> list[int]:
    """Settle dead workers' trials as the next worker would, once past the (one-second) grace period."""
    import time

    from study import ledger

    time.sleep(2.5)  # past the grace period, at the one-second resolution of SQLite's clock
    return ledger.Settle(tracker.client, sweep.metrics)(study)


PG = os.environ.get("STUDY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


@contextlib.contextmanager
def postgres_databases(parts=("mlflow", "optuna")):
    """Fresh databases on the PostgreSQL server (MLflow's and Optuna's schemas each need their own),
    as URIs; dropped afterwards. Skips (fails in CI) without a server."""
    import uuid

    import psycopg  # a declared test dependency

    try:
        admin = psycopg.connect(f"{PG}/postgres", connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        unavailable(f"no PostgreSQL server at {PG} ({str(exc).strip()}); set STUDY_TEST_POSTGRES to test this path")
    names = [f"study_test_{uuid.uuid4().hex[:10]}_{part}" for part in parts]
    with admin.cursor() as cursor:
        for name in names:
            cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield [f"{PG}/{name}" for name in names]
    finally:
        with admin.cursor() as cursor:
            for name in names:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
