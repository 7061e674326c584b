"""Reports built from real sweeps in temporary stores: contents, robustness, escaping, paging,
and the page as a real browser (Debian's headless Chromium) shows it."""

from __future__ import annotations

import re
import textwrap
import time
from pathlib import Path

import markupsafe
import optuna
import pytest
from conftest import TINY, assert_legible_at_phone_and_desktop_widths, chromium_driver

from study.config import load_sweep
from study.errors import StudyError
from study.report import load
from study.report.build import build_index, build_report
from study.sweep import prepare, run_sweep

REPLICATED = TINY + "replicates: 2\n"


@pytest.fixture(scope="module")
def demo_like(tmp_path_factory):
    """A finished sweep with replicates, shared by the tests that only read it."""
    from study.store import Store

    folder = tmp_path_factory.mktemp("minidemo")
    path = folder / "minidemo.yaml"
    path.write_text(REPLICATED)
    store = Store.resolve(folder / "store")
    run_sweep(load_sweep(path), store)
    return store


@pytest.mark.slow
def test_report_of_a_finished_sweep_has_every_section_and_file(demo_like, tmp_path):
    built = build_report(demo_like, "minidemo", tmp_path / "reports")
    page = built.path.read_text()
    folder = built.path.parent
    for heading in ("Overfitting and underfitting", "Bias and variance", "Regimes, remedies and the article", "The study"):
        assert heading in page, heading
    assert "0-1 loss (Domingos 2000)" in page, "the classification decomposition is named"
    assert page.count("<img ") == len(list((folder / "figures").glob("*.svg"))) >= 5
    assert list((folder / "figures").glob("*-accuracy-size.svg")), "every sweep of several sizes gets the accuracy–size chart"
    assert "data:image/svg+xml;base64," in page and "http" not in page.split("<body>")[1].split("MLflow")[0], "self-contained"
    contents = page.split('<nav class="toc">')[1].split("</nav>")[0]
    anchors = re.findall(r'href="#([^"]+)"', contents)
    assert len(anchors) >= 5 and all(f'id="{a}"' in page for a in anchors), "a contents list of the page's sections"
    assert (folder / "runs.csv").read_text().count("\n") == 7, "header + 6 trial runs"
    assert "swapped headings" in page
    client = demo_like.mlflow()
    sweep_run = client.search_runs([client.get_experiment_by_name("minidemo").experiment_id], "tags.`study.role` = 'sweep'")[0]
    logged = {a.path for a in client.list_artifacts(sweep_run.info.run_id, "report")}
    assert {"report/index.html", "report/runs.csv", "report/figures"} <= logged, "the report is in MLflow too"


def test_links_to_mlflow_runs_when_the_server_is_known(demo_like, tmp_path):
    page = build_report(demo_like, "minidemo", tmp_path, mlflow_url="http://127.0.0.1:5000/").path.read_text()
    assert 'href="http://127.0.0.1:5000/#/experiments/' in page and "/runs/" in page
    assert "?workflowType=machine_learning" in page, "links open the UI's Model training view"


@pytest.mark.slow
def test_regression_sweep_reports_the_exact_squared_error_decomposition(write_sweep, store, tmp_path):
    text = textwrap.dedent("""
        dataset: {name: polynomial, num_samples: 30, noise: 0.3, test_samples: 200}
        model: {depth: 0}
        train: {epochs: 3, learning_rate: 0.1}
        search:
          model.poly_degree: [1, 3]
        sampler: grid
        replicates: 3
    """)
    run_sweep(load_sweep(write_sweep("poly", text)), store)
    page = build_report(store, "poly", tmp_path).path.read_text()
    assert "Held-out error and its squared error decomposition against model.poly_degree" in page
    assert "bias²" in page and "known noise variance" in page


@pytest.mark.slow
def test_a_compression_sweep_gets_the_pareto_section(write_sweep, store, tmp_path):
    text = textwrap.dedent("""
        dataset: {name: mnist1d, num_samples: 400}
        base:
          model: {kind: cnn, width: 8, depth: 2}
          train: {epochs: 2}
        compress: {method: quantize}
        search:
          compress.bits: [4, 8, 32]
          compress.scheme: [qat, ptq_dynamic]
        objective: {artifact/val_accuracy: maximize, artifact/size_bytes: minimize}
        sampler: grid
    """)
    run_sweep(load_sweep(write_sweep("squeeze", text)), store)
    built = build_report(store, "squeeze", tmp_path)
    page = built.path.read_text()
    assert "Accuracy against size" in page and "Pareto frontier" in page and "The frontier" in page
    assert "Test accuracy of every file against its bit-width" in page
    figures = {path.name.split("-", 1)[1]: path.read_text() for path in (built.path.parent / "figures").glob("*.svg")}
    assert "float32 base" in figures["accuracy-vs-bits.svg"], "bit-widths are read against the float32 base"
    # every file LiteRT runs (the .qpack does not) is timed: LiteRT's int4 is among them
    assert "Accuracy against latency" in figures["accuracy-vs-latency.svg"] and "Test accuracy of every file a runtime runs" in page
    assert "int4 weights" in (built.path.parent / "runs.csv").read_text(), "LiteRT's int4 file is one of the files"
    for metric in ("artifact/val_accuracy", "artifact/size_bytes"):
        assert f"Optimization history: {metric}" in figures["history.svg"], "every objective's history"
    assert "Overfitting and underfitting" not in page


def test_a_sweep_with_failed_running_and_no_finished_trials_still_reports(write_sweep, store, tmp_path):
    sweep = load_sweep(write_sweep("rough", TINY.replace("model.kind: [mlp, cnn]", "dataset.train_size: [100000]")))
    assert run_sweep(sweep, store).counts.failed == 3  # every grid point asks for too many examples
    study, tracker, sweep_run_id = prepare(sweep, store)
    running = study.ask()  # a trial still "running", with its run
    run = tracker.start_trial(running.number, {}, {"model.width": 4}, _data(sweep))
    running.set_user_attr("mlflow_run_id", run.run_id)
    page = build_report(store, "rough", tmp_path).path.read_text()
    assert "No trial has finished yet" in page
    assert "Trials that did not finish" in page and "exceeds the" in page
    assert "running" in page


def _data(sweep):
    from study.datasets import load_dataset

    return load_dataset(sweep.config.dataset, sweep.config.seed, sweep.path.parent)


def test_a_sweep_with_no_runs_at_all_reports_that(write_sweep, store, tmp_path):
    prepare(load_sweep(write_sweep("empty", TINY)), store)
    page = build_report(store, "empty", tmp_path).path.read_text()
    assert "has no trial runs yet" in page


def test_an_unknown_sweep_lists_the_known_ones(demo_like, tmp_path):
    with pytest.raises(StudyError, match=r"no sweep 'minidem' .*did you mean 'minidemo'\? \(known sweeps: .*minidemo"):
        build_report(demo_like, "minidem", tmp_path)


def test_runs_are_read_page_by_page(demo_like, monkeypatch):
    monkeypatch.setattr(load, "PAGE", 2)
    data = load.load_sweep_runs(demo_like, "minidemo")
    assert len(data.runs) == 6 and data.runs["trial"].tolist() == list(range(6))


HOSTILE = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'


def hostile_sweep(write_sweep, store, tmp_path) -> Path:
    csv = tmp_path / "data.csv"
    target = "<b>y</b>"
    lines = [f"a,b,{target}"] + [f"{i % 7},{(i * 3) % 5},{['cat', '<i>dog</i>'][i % 2]}" for i in range(40)]
    csv.write_text("\n".join(lines) + "\n")
    text = textwrap.dedent(f"""
        description: '{HOSTILE}'
        dataset: {{name: csv, path: data.csv, target: '{target}'}}
        model: {{width: 4, depth: 1}}
        train: {{epochs: 1}}
        search:
          model.width: [2, 4]
        sampler: grid
        objective: {{val/accuracy: maximize}}
    """)
    name = 'evil<img src=x onerror=alert(2)>'
    path = write_sweep(name, text)
    run_sweep(load_sweep(path), store)
    return build_report(store, name, tmp_path / "reports").path


def test_hostile_names_descriptions_and_params_are_escaped(write_sweep, store, tmp_path):
    page = hostile_sweep(write_sweep, store, tmp_path).read_text()
    body = page.split("<body>", 1)[1]
    assert "<script" not in page.lower(), "no script tag survives"
    assert "<img src=x" not in body and "<b>y</b>" not in body and "<i>dog</i>" not in page
    assert str(markupsafe.escape(HOSTILE)) in page, "the description is shown, escaped (by the template)"
    assert "&lt;b&gt;y&lt;/b&gt;" in page, "the CSV's target name is shown, escaped"


# ---------------------------------------------------------------------------------- browser
def assert_page_shows_everything(driver, path: Path, screenshot: Path) -> None:
    driver.get(path.as_uri())
    deadline = time.time() + 30
    while driver.execute_script("return document.readyState") != "complete" and time.time() < deadline:
        time.sleep(0.2)
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight]);"
    )
    assert images and all(done and w > 100 and h > 100 for done, w, h in images), images
    text = driver.execute_script("return document.body.innerText")
    assert len(text) > 500, "the page is not blank"
    assert driver.execute_script("return document.querySelectorAll('script').length") == 0
    driver.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 20_000, "the screenshot has content"
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
    assert_legible_at_phone_and_desktop_widths(driver, path)


@pytest.mark.slow
def test_reports_open_in_a_real_browser_with_every_figure_and_no_errors(demo_like, write_sweep, store, tmp_path):
    out = tmp_path / "reports"
    built = build_report(demo_like, "minidemo", out)
    hostile = hostile_sweep(write_sweep, store, tmp_path)
    index = build_index(out, [built])
    driver = chromium_driver(tmp_path)
    try:
        assert_page_shows_everything(driver, built.path, tmp_path / "report.png")
        assert_page_shows_everything(driver, hostile, tmp_path / "hostile.png")
        assert driver.execute_script("return document.querySelectorAll('[onerror], [onload], [onclick]').length") == 0
        assert "evil<img src=x onerror=alert(2)>" in driver.title, "the hostile name shows as text"
        driver.get(built.path.as_uri())
        broken = driver.execute_script(
            "return Array.from(document.querySelectorAll('nav.toc a')).map(a => a.getAttribute('href'))"
            ".filter(h => !document.getElementById(h.slice(1)));")
        assert broken == [], "every contents link has its section"
        driver.get(index.as_uri())
        text = driver.execute_script("return document.body.innerText")
        assert "minidemo" in text and "val/accuracy" in text, "the index says what each sweep found"
    finally:
        driver.quit()


def test_optuna_and_mlflow_agree_on_the_trials_the_report_counts(demo_like, tmp_path):
    page = build_report(demo_like, "minidemo", tmp_path).path.read_text()
    study = optuna.load_study(study_name="minidemo", storage=demo_like.optuna())
    assert len(study.trials) == 6 and "<td>finished</td><td class=\"num\">6</td><td class=\"num\">6</td>" in page
