"""Links that land: every run link names the store it came from (that store's experiment and run
ids, and the address of that store's MLflow UI), the report's header says which store to serve
there, and `study run` ends with the commands for its own store. Two real local stores, each
with a one-trial sweep of the same name: both number its experiment alike, so only the store
tells their links apart."""

from __future__ import annotations

import contextlib
import io
import re
import signal
import sys

import pytest
from conftest import TINY

from study import cli
from study.serve import LOCAL_UI, StoreUI, store_ui, ui_link
from study.store import Store

NAME = "twin"


def study_main(*argv: str) -> tuple[int, str]:
    """`study ARGV` in this process: its exit status and what it printed."""
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.setattr(signal, "signal", lambda *args: None)  # cmd_run's SIGTERM handler stays out of pytest
        code = cli.main(list(argv))
    return code, out.getvalue()


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """{label: (store, what `study run` printed)}: `here` given as a relative --store, `other` as an
    absolute one, each with one finished trial of the sweep `twin`."""
    folder = tmp_path_factory.mktemp("links")
    sweep = folder / f"{NAME}.yaml"
    sweep.write_text(TINY)
    found = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        for label, given in (("here", "here"), ("other", str(folder / "elsewhere" / "other"))):
            code, printed = study_main("run", str(sweep), "--store", given, "--trials", "1", "--set", "train.epochs=1",
                                       "--quiet")
            assert code == 0, printed
            found[label] = (Store.resolve(folder / given), printed, given)
    return found


def trial_runs(store: Store) -> tuple[str, set[str]]:
    client = store.mlflow()
    experiment = client.get_experiment_by_name(NAME).experiment_id
    return experiment, {r.info.run_id for r in client.search_runs([experiment], "tags.`study.role` = 'trial'")}


def test_study_run_ends_with_the_report_and_ui_commands_for_its_store(stores):
    program = f"{sys.executable} -m study"  # how this process's `study` runs again (cli._self_command)
    for store, printed, given in stores.values():
        experiment, _ = trial_runs(store)
        *_, report, browse = printed.splitlines()
        assert report == f"report:  {program} report {NAME} --store {given}", printed
        assert browse == (f"browse:  {program} ui --store {given}   then open "
                          f"{LOCAL_UI}/#/experiments/{experiment}/runs?workflowType=machine_learning"), printed


def test_each_report_links_runs_of_its_own_store_and_says_which_store_to_serve(stores, tmp_path):
    pages, ids = {}, {}
    for label, (store, _, _) in stores.items():
        code, printed = study_main("report", NAME, "--store", str(store.root), "--out", str(tmp_path / label))
        assert code == 0, printed
        assert printed.splitlines()[-1] == (f"run links: {sys.executable} -m study ui --store {store.root}   then open "
                                            f"{ui_link(LOCAL_UI)}"), "where the run links open, for this store"
        pages[label] = (tmp_path / label / NAME / "index.html").read_text()
        ids[label] = trial_runs(store)

    for label, page in pages.items():
        store = stores[label][0]
        experiment, runs = ids[label]
        other = next(s for name, (s, _, _) in stores.items() if name != label)
        linked = re.findall(r'href="http://127\.0\.0\.1:5000/#/experiments/([^/"]+)/runs/([^?"]+)\?workflowType=machine_learning"',
                            page)
        assert linked, "the report links its runs"
        assert {e for e, _ in linked} == {experiment}, "the links name this store's experiment"
        assert {r for _, r in linked} <= runs and not {r for _, r in linked} & ids[[n for n in ids if n != label][0]][1], \
            "and this store's runs"
        header = page.split("<body>", 1)[1].split('<span class="header">', 1)[1].split("</span>", 1)[0]
        assert f"MLflow UI for this store: run <code>study ui --store {store.root}</code>, then open " in header
        experiment_link = ui_link(LOCAL_UI, experiment)
        assert f'<a href="{experiment_link}">{experiment_link}</a>' in header, "the address is a real link, to the runs"
        assert str(other.root) not in page, "nothing points at the other store"
        assert "does not exist" in header, "the header says what another store's UI answers"
        experiments = re.findall(r'href="([^"]*#/experiments[^"]*)"', page)
        assert experiments and all(h.endswith("?workflowType=machine_learning") for h in experiments), \
            "every experiment link opens the Model training view, not the GenAI one"


def test_a_given_address_study_ui_serves_names_its_port(stores, tmp_path):
    store = stores["other"][0]
    code, printed = study_main("report", NAME, "--store", str(store.root), "--out", str(tmp_path), "--mlflow-url",
                               "http://127.0.0.1:5001/")
    assert code == 0, printed
    page = (tmp_path / NAME / "index.html").read_text()
    assert f"<code>study ui --store {store.root} --port 5001</code>" in page
    assert 'href="http://127.0.0.1:5001/#/experiments/' in page and "127.0.0.1:5000" not in page
    assert f"ui --store {store.root} --port 5001   then open http://127.0.0.1:5001/#/experiments" in printed


def test_a_tracking_server_is_linked_directly_without_its_password(stores, tmp_path):
    from study.report import sections
    from study.report.load import load_sweep_runs
    from study.report.render import render_report

    store = stores["here"][0]
    experiment, runs = trial_runs(store)
    report = sections.compute_report(load_sweep_runs(store, NAME))
    remote = Store(store.root, "https://alice:s3cret@mlflow.example.org:8443/mlflow/?token=t0k3n", store.storage_url, None)
    page = render_report(report, tmp_path, store_ui(remote))
    assert "s3cret" not in page and "alice" not in page and "t0k3n" not in page
    linked = re.findall(r'href="https://mlflow\.example\.org:8443/mlflow/#/experiments/([^/"]+)/runs/([^?"]+)\?', page)
    assert linked and {e for e, _ in linked} == {experiment} and {r for _, r in linked} <= runs
    header = page.split('<span class="header">', 1)[1].split("</span>", 1)[0]
    assert header.startswith("MLflow UI: this store&#39;s tracking server, <a href=") and "<code>" not in header


def test_the_ui_of_each_kind_of_store(tmp_path):
    local = Store.resolve(tmp_path / "a")
    assert store_ui(local) == StoreUI(LOCAL_UI, f"study ui --store {local.root}")
    assert store_ui(local, "http://localhost:5002").command == f"study ui --store {local.root} --port 5002"
    assert store_ui(local, "https://mlflow.example.org") == StoreUI("https://mlflow.example.org"), "another UI: no command"
    database = Store(local.root, "postgresql://bob:pw@db.example.org/mlflow", "postgresql://bob:pw@db.example.org/optuna", "/shared")
    ui = store_ui(database)
    assert ui is not None and ui.url == LOCAL_UI and ui.command == "study ui --tracking-uri 'postgresql://bob:***@db.example.org/mlflow'"
    server = Store(local.root, "http://carol:pw@10.0.0.5:5000", local.storage_url, None)
    assert store_ui(server) == StoreUI("http://10.0.0.5:5000", server=True)
    assert store_ui(server, "http://10.0.0.5:5000/") == StoreUI("http://10.0.0.5:5000/", server=True)
    assert store_ui(Store(local.root, "databricks", local.storage_url, None)) is None, "no UI address known"


def test_commands_repeat_the_store_options_as_given():
    options = ["--tracking-uri", "postgresql://u:p@db/mlflow", "--storage", "postgresql://u:p@db/optuna"]
    store = Store.resolve(None, options[1], options[3])
    report, browse = cli.where_to_look("demo", "3", store, options)
    program = cli._self_command()
    assert report == f"report:  {program} report demo {' '.join(options)}"
    assert browse == f"browse:  {program} ui {' '.join(options)}   then open {ui_link(LOCAL_UI, '3')}"
    server = Store.resolve(None, "https://u:p@mlflow.example.org", "postgresql://u:p@db/optuna")
    assert cli.where_to_look("demo", "3", server, [])[1] == (
        f"browse:  open {ui_link('https://mlflow.example.org', '3')}   (the tracking server's own UI)")
