"""The search space meets Optuna (study/search.py): grids, conditional parameters, log ranges,
seeds, samplers and pruners, on real in-memory Optuna studies."""

from __future__ import annotations

import itertools
import math
import textwrap

import optuna
import pytest
from conftest import ROOT, TINY
from optuna.distributions import FloatDistribution, IntDistribution

from study import search
from study.config import load_sweep
from study.errors import StudyError
from study.schema import FixedParam

pytestmark = pytest.mark.unit  # pure logic: no TensorFlow, no store

optuna.logging.set_verbosity(optuna.logging.WARNING)

SAMPLED = textwrap.dedent("""
    dataset: {name: mnist1d, num_samples: 400}
    search:
      train.learning_rate: {type: float, low: 1e-4, high: 1e-1, log: true}
      model.width: {type: int, low: 2, high: 256, log: true}
      model.depth: {type: int, low: 1, high: 7, step: 3}
      model.dropout: {type: float, low: 0.0, high: 0.5, step: 0.25}
      model.activation: [relu, tanh]
      train.batch_size: 32
    sampler: random
    budget: {trials: 10}
""")

# A compression sweep: which compress.* and model.* keys a trial reads depends on its method and bits.
COMPRESSION = textwrap.dedent("""
    dataset: {name: mnist1d, num_samples: 400}
    base:
      model: {kind: cnn, width: 8, depth: 2}
    model: {kind: cnn, width: 4, depth: 1}
""")
CONDITIONAL = COMPRESSION + textwrap.dedent("""
    search:
      compress.method: [none, prune, quantize, distill]
      compress.sparsity: {type: float, low: 0.5, high: 0.9}
      compress.bits: [4, 8]
      compress.scheme: [qat, ptq_dynamic]
      compress.temperature: [2.0, 5.0]
      model.width: [4, 8]
      train.learning_rate: [1e-3, 1e-2]
    objective: {artifact/val_accuracy: maximize}
""")


def expected_keys(method: str, bits: int) -> set[str]:
    """What a trial of this conditional sweep reads, written out by hand from the schema's rules."""
    keys = {"compress.method", "train.learning_rate"}
    keys |= {
        "none": set(),
        "prune": {"compress.sparsity"},
        "quantize": {"compress.bits"} | ({"compress.scheme"} if bits in (4, 8) else set()),  # 4: ptq_dynamic is LiteRT's int4
        "distill": {"compress.temperature", "model.width"},
    }[method]
    return keys


def sample(sweep, n: int, sampler=None) -> list[dict]:
    study = optuna.create_study(sampler=sampler or optuna.samplers.RandomSampler(seed=0))
    drawn = []
    for _ in range(n):
        trial = study.ask()
        params = search.suggest(trial, sweep)
        assert params == trial.params, "every value is suggested through Optuna, under its dotted key"
        drawn.append(params)
        study.tell(trial, sum(hash(str(v)) % 97 for v in params.values()) / 97.0)
    return drawn


# -------------------------------------------------------------------------------- relevant
def test_every_key_is_relevant_outside_compression_sweeps():
    for key in ("model.width", "compress.sparsity", "train.epochs", "dataset.train_size"):
        assert search.relevant(key, None)


@pytest.mark.parametrize("key, compress, reads", [
    ("compress.method", {"method": "none", "bits": 8, "scheme": "qat", "structure": "unstructured"}, True),
    ("compress.sparsity", {"method": "prune", "bits": 8, "scheme": "qat", "structure": "unstructured"}, True),
    ("compress.sparsity", {"method": "prune", "bits": 8, "scheme": "qat", "structure": "2:4"}, False),
    ("compress.sparsity", {"method": "quantize", "bits": 8, "scheme": "qat", "structure": "unstructured"}, False),
    ("compress.scheme", {"method": "quantize", "bits": 8, "scheme": "qat", "structure": "unstructured"}, True),
    ("compress.scheme", {"method": "quantize", "bits": 4, "scheme": "qat", "structure": "unstructured"}, True),  # LiteRT's int4
    ("compress.scheme", {"method": "quantize", "bits": 5, "scheme": "qat", "structure": "unstructured"}, False),
    ("compress.finetune_epochs", {"method": "quantize", "bits": 4, "scheme": "ptq_dynamic", "structure": "unstructured"}, False),
    ("compress.criterion", {"method": "prune", "bits": 8, "scheme": "qat", "structure": "channels"}, True),
    ("compress.criterion", {"method": "prune", "bits": 8, "scheme": "qat", "structure": "unstructured"}, True),  # magnitude or random
    ("compress.criterion", {"method": "prune", "bits": 8, "scheme": "qat", "structure": "2:4"}, False),
    ("compress.schedule", {"method": "prune", "bits": 8, "scheme": "qat", "structure": "channels"}, False),
    ("compress.scope", {"method": "prune", "bits": 8, "scheme": "qat", "structure": "channels"}, True),
    ("compress.scope", {"method": "prune", "bits": 8, "scheme": "qat", "structure": "2:4"}, False),
    ("compress.finetune_epochs", {"method": "quantize", "bits": 8, "scheme": "ptq_int8", "structure": "unstructured"}, False),
    ("compress.finetune_epochs", {"method": "quantize", "bits": 8, "scheme": "qat", "structure": "unstructured"}, True),
    ("compress.finetune_epochs", {"method": "quantize", "bits": 32, "scheme": "qat", "structure": "unstructured"}, False),
    ("compress.clusters", {"method": "cluster", "bits": 8, "scheme": "qat", "structure": "unstructured"}, True),
    ("compress.temperature", {"method": "cluster", "bits": 8, "scheme": "qat", "structure": "unstructured"}, False),
    ("model.width", {"method": "distill", "bits": 8, "scheme": "qat", "structure": "unstructured"}, True),
    ("model.width", {"method": "architecture", "bits": 8, "scheme": "qat", "structure": "unstructured"}, True),
    ("model.width", {"method": "prune", "bits": 8, "scheme": "qat", "structure": "unstructured"}, False),
    ("train.learning_rate", {"method": "none", "bits": 8, "scheme": "qat", "structure": "unstructured"}, True),
])
def test_a_compression_trial_reads_only_what_its_method_reads(key, compress, reads):
    assert search.relevant(key, compress) is reads


# ------------------------------------------------------------------------------------ suggest
def test_conditional_parameters_are_sampled_only_where_a_trial_reads_them(write_sweep):
    sweep = load_sweep(write_sweep("conditional", CONDITIONAL + "sampler: random\nbudget: {trials: 40}\n"))
    drawn = sample(sweep, 60)
    seen = set()
    for params in drawn:
        method, bits = params["compress.method"], params.get("compress.bits", 8)
        assert set(params) == expected_keys(method, bits), params
        seen.add((method, bits) if method == "quantize" else method)
        if "compress.sparsity" in params:
            assert 0.5 <= params["compress.sparsity"] <= 0.9
    assert seen == {"none", "prune", ("quantize", 4), ("quantize", 8), "distill"}, "every branch was drawn"


def test_every_searched_key_is_sampled_in_a_plain_sweep_and_fixed_ones_never(write_sweep):
    sweep = load_sweep(write_sweep("sampled", SAMPLED))
    for params in sample(sweep, 20):
        assert set(params) == {"train.learning_rate", "model.width", "model.depth", "model.dropout", "model.activation"}
        assert "train.batch_size" not in params
        assert params["model.depth"] in (1, 4, 7) and params["model.dropout"] in (0.0, 0.25, 0.5)
        assert params["model.activation"] in ("relu", "tanh")
        assert sweep.resolve(params).train.batch_size == 32


def test_log_ranges_are_log_uniform(write_sweep):
    sweep = load_sweep(write_sweep("sampled", SAMPLED))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    search.suggest(trial, sweep)
    assert trial.distributions["train.learning_rate"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert trial.distributions["model.width"] == IntDistribution(2, 256, log=True, step=1)
    assert trial.distributions["model.depth"] == IntDistribution(1, 7, step=3)
    drawn = sample(sweep, 400, optuna.samplers.RandomSampler(seed=2))
    rates = [p["train.learning_rate"] for p in drawn]
    widths = [p["model.width"] for p in drawn]
    assert all(1e-4 <= r <= 1e-1 for r in rates) and all(2 <= w <= 256 for w in widths)
    # half the draws lie below the geometric middle (a uniform draw would put 0.3% of them there)
    below = sum(r < math.sqrt(1e-4 * 1e-1) for r in rates) / len(rates)
    assert 0.4 < below < 0.6, below
    assert 0.35 < sum(w < 23 for w in widths) / len(widths) < 0.65  # sqrt(2 * 256) ≈ 22.6


def test_a_sweep_without_search_samples_nothing(write_sweep):
    sweep = load_sweep(write_sweep("plain", "dataset: {name: mnist1d}\nbudget: {trials: 1}\n"))
    assert sample(sweep, 1) == [{}]


def test_a_search_entry_of_no_known_kind_is_refused():
    trial = optuna.create_study().ask()
    with pytest.raises(TypeError, match="cannot search model.width"):
        search._suggest_one(trial, "model.width", FixedParam(type="fixed", value=8))


# ------------------------------------------------------------------------------------- seeds
def test_sampler_seeds_are_reproducible_per_salt_and_differ_between_salts_and_sweep_seeds():
    assert search.sampler_seed(0, 1) == search.sampler_seed(0, 1)
    seeds = {search.sampler_seed(seed, salt) for seed in range(5) for salt in range(5)}
    assert len(seeds) == 25 and all(0 <= s < 2**31 for s in seeds)
    assert search.sampler_seed(3) != search.sampler_seed(3), "without a salt each process draws its own"


@pytest.mark.parametrize("sampler", ["random", "{name: tpe, n_startup_trials: 3}"])
def test_the_same_salt_draws_the_same_trials_and_another_salt_others(write_sweep, sampler):
    sweep = load_sweep(write_sweep("seeded", SAMPLED.replace("sampler: random", f"sampler: {sampler}")))
    first = sample(sweep, 8, search.build_sampler(sweep, salt=11))
    again = sample(sweep, 8, search.build_sampler(sweep, salt=11))
    other = sample(sweep, 8, search.build_sampler(sweep, salt=12))
    assert first == again
    assert first != other


def test_the_sweep_seed_changes_the_draws(write_sweep):
    a = load_sweep(write_sweep("a", SAMPLED))
    b = load_sweep(write_sweep("b", SAMPLED + "seed: 1\n"))
    assert sample(a, 5, search.build_sampler(a, salt=0)) != sample(b, 5, search.build_sampler(b, salt=0))


@pytest.mark.parametrize("spec, kind", [
    ("random", optuna.samplers.RandomSampler),
    ("grid", optuna.samplers.RandomSampler),  # grid points are queued as fixed trials
    ("tpe", optuna.samplers.TPESampler),
    ("{name: nsgaii, population_size: 4}", optuna.samplers.NSGAIISampler),
])
def test_each_sampler_name_builds_its_optuna_sampler(write_sweep, spec, kind):
    text = SAMPLED.replace("sampler: random", f"sampler: {spec}")
    if spec == "grid":
        text = text.replace("{type: float, low: 1e-4, high: 1e-1, log: true}", "[1e-3, 1e-2]").replace(
            "{type: int, low: 2, high: 256, log: true}", "[4, 8]")
    assert type(search.build_sampler(load_sweep(write_sweep("s", text)), salt=0)) is kind


# -------------------------------------------------------------------------------------- grid
def test_a_grid_holds_every_combination_once(write_sweep):
    sweep = load_sweep(write_sweep("tiny", TINY))
    points = search.grid_points(sweep)
    expected = [{"model.width": w, "model.kind": k} for w, k in itertools.product([4, 8, 16], ["mlp", "cnn"])]
    assert len(points) == 6 == search.grid_size(sweep)
    assert sorted(points, key=str) == sorted(expected, key=str)


def test_a_grid_is_shuffled_by_the_sweep_seed_alone(write_sweep):
    zero = search.grid_points(load_sweep(write_sweep("zero", TINY)))
    assert search.grid_points(load_sweep(write_sweep("again", TINY))) == zero, "the same seed, the same order"
    one = search.grid_points(load_sweep(write_sweep("one", TINY + "seed: 1\n")))
    assert sorted(one, key=str) == sorted(zero, key=str) and one != zero


def test_a_grid_steps_through_ranges_and_leaves_fixed_values_out(write_sweep):
    text = textwrap.dedent("""
        dataset: {name: mnist1d, num_samples: 400}
        search:
          model.dropout: {type: float, low: 0.0, high: 0.5, step: 0.25}
          model.depth: {type: int, low: 1, high: 5, step: 2}
          model.width: 8
        sampler: grid
    """)
    points = search.grid_points(load_sweep(write_sweep("ranges", text)))
    assert sorted((p["model.dropout"], p["model.depth"]) for p in points) == [
        (d, n) for d in (0.0, 0.25, 0.5) for n in (1, 3, 5)]
    assert all(set(p) == {"model.dropout", "model.depth"} for p in points)


def test_a_grid_without_search_is_one_empty_point(write_sweep):
    sweep = load_sweep(write_sweep("single", "dataset: {name: mnist1d}\nsampler: grid\n"))
    assert search.grid_points(sweep) == [{}] and search.grid_size(sweep) == 1


def test_a_compression_grid_keeps_each_distinct_setting_a_trial_reads_once(write_sweep):
    sweep = load_sweep(write_sweep("conditional", CONDITIONAL.replace(
        "{type: float, low: 0.5, high: 0.9}", "[0.5, 0.9]") + "sampler: grid\n"))
    points = search.grid_points(sweep)
    # by hand: each method's own knobs times the learning rate's 2 values
    per_method = {"none": 1, "prune": 2, "quantize": 2 + 2, "distill": 2 * 2}  # quantize: 4 and 8 bits x 2 schemes
    assert search.grid_size(sweep) == len(points) == 2 * sum(per_method.values())
    for p in points:
        assert set(p) == expected_keys(p["compress.method"], p.get("compress.bits", 8)), p
    assert len({tuple(sorted(p.items())) for p in points}) == len(points), "no setting twice"


@pytest.mark.parametrize("name, size", [("quantization", 7 + 3 + 2), ("demo_compression", 1 + 5 * 2 + 2 + 1),
                                        ("pruning", 1 + 2 * (5 * 2 + 1)), ("structured_pruning", 1 + 2 * 2 * 5),
                                        ("demo", 2 * 3 * 2)])
def test_the_shipped_grids_have_the_sizes_their_comments_state(name, size):
    """quantization: bits 2, 3, 5, 6, 7, 16, 32 alone, 8 bits with 3 schemes, 4 with 2; demo_compression: none, prune
    by magnitude or at random at 5 sparsities, quantize at 4 or 8 bits, distill; pruning: none, and 2 methods x
    (5 sparsities x magnitude or random, and 2:4); structured_pruning: none, and 2 structures x 2 criteria x 5 fractions; demo: 2
    kinds x 3 widths x 2 dropouts."""
    assert search.grid_size(load_sweep(ROOT / "sweeps" / f"{name}.yaml")) == size


def test_sampled_sweeps_have_no_grid(write_sweep):
    sweep = load_sweep(write_sweep("sampled", SAMPLED))
    assert search.grid_points(sweep) == [] and search.grid_size(sweep) is None


def test_a_float_range_without_a_step_cannot_be_a_grid(write_sweep):
    text = TINY.replace("model.width: [4, 8, 16]", "model.dropout: {type: float, low: 0.0, high: 0.5}")
    with pytest.raises(StudyError, match="search.model.dropout: a float range needs a step"):
        load_sweep(write_sweep("nostep", text))


# ------------------------------------------------------------------------------------ pruners
PRUNED = textwrap.dedent("""
    dataset: {name: mnist1d, num_samples: 400}
    train: {epochs: 7}
    objective: {val/loss: minimize}
    sampler: random
    budget: {trials: 4}
""")


@pytest.mark.parametrize("search_text, epochs", [
    ("", 7),
    ("search: {train.epochs: {type: int, low: 2, high: 30}}\n", 30),
    ("search: {train.epochs: [3, 12, 5]}\n", 12),
    ("search: {train.epochs: 9}\n", 9),
])
def test_hyperbands_largest_budget_is_the_most_epochs_a_trial_can_run(write_sweep, search_text, epochs):
    sweep = load_sweep(write_sweep("hb", PRUNED + search_text + "pruner: {name: hyperband, min_resource: 2}\n"))
    assert search.max_epochs(sweep) == epochs
    pruner = search.build_pruner(sweep)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert (pruner._min_resource, pruner._max_resource, pruner._reduction_factor) == (2, epochs, 3)


def test_the_median_pruner_waits_its_warmup_and_startup_trials(write_sweep):
    """Trials report 1-based epochs: n_warmup_steps 3 judges a trial after its third epoch at the earliest."""
    sweep = load_sweep(write_sweep("median", PRUNED + "pruner: {name: median, n_startup_trials: 2, n_warmup_steps: 3}\n"))
    study = optuna.create_study(pruner=search.build_pruner(sweep))

    def good(value):
        trial = study.ask()
        for epoch in range(1, 6):
            trial.report(value, epoch)
        study.tell(trial, value)

    good(0.1)
    early = study.ask()
    early.report(9.0, 5)
    assert not early.should_prune(), "one finished trial is fewer than n_startup_trials"
    study.tell(early, 9.0)
    good(0.2)
    bad = study.ask()
    bad.report(9.0, 2)
    assert not bad.should_prune(), "warm-up: epochs 1 and 2 are not judged"
    bad.report(9.0, 3)
    assert bad.should_prune()


def test_no_pruner_never_prunes(write_sweep):
    sweep = load_sweep(write_sweep("none", PRUNED))
    assert isinstance(search.build_pruner(sweep), optuna.pruners.NopPruner)


def test_a_worker_guesses_the_next_pack_from_the_queued_grid_points(write_sweep):
    """While a pack trains, the graph of the trials likely asked next compiles: a grid's queued
    points, in the order Optuna hands them out, after the ones just asked."""
    from study.worker import queued_next, trials_per_pack

    sweep = load_sweep(write_sweep("tiny", TINY + "replicates: 4\n"))  # pack 8: two trials at a time
    assert trials_per_pack(sweep) == 2
    study = optuna.create_study()
    points = search.grid_points(sweep)
    for point in points:
        study.enqueue_trial(point)
    snapshot = study.get_trials(deepcopy=False)
    asked = [study.ask(), study.ask()]
    assert [search.suggest(t, sweep) for t in asked] == points[:2]
    assert queued_next(snapshot, asked, sweep) == points[2:4]
    snapshot = study.get_trials(deepcopy=False)
    asked = [study.ask() for _ in range(3)]
    assert queued_next(snapshot, asked, sweep) == points[5:6], "the last point"
    assert queued_next(study.get_trials(deepcopy=False), [study.ask()], sweep) == [], "nothing queued: nothing guessed"
