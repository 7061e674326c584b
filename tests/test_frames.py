"""`study.results`' plain column names and sweep names, on hand-made inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from study.frames import plain_columns, sweep_name

pytestmark = pytest.mark.unit  # pure logic: no TensorFlow, no store


def test_settings_and_metrics_lose_their_prefix_and_tags_keep_theirs():
    columns = ["run_id", "params.model.width", "params.seed", "metrics.val/accuracy", "tags.study.state", "trial", "regime"]
    assert plain_columns(columns) == {"params.model.width": "model.width", "params.seed": "seed",
                                      "metrics.val/accuracy": "val/accuracy"}


def test_a_plain_name_already_taken_keeps_its_prefix():
    assert plain_columns(["trial", "params.trial", "metrics.x", "params.x"]) == {"metrics.x": "x"}
    assert plain_columns(["params."]) == {}, "nothing left to name the column by"


def test_a_sweep_is_named_by_its_name_or_its_file():
    assert sweep_name("demo") == sweep_name("sweeps/demo.yaml") == sweep_name(Path("sweeps/demo.yml")) == "demo"
    assert sweep_name("v1.2") == "v1.2", "a dotted name is a name, not a file"
