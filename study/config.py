"""Schema of a sweep file: `load_sweep(path)` turns YAML into a validated, immutable `Sweep`.

A sweep file holds the defaults of one trial (`dataset`, `model`, `train`), a `search` space of
dotted keys over those defaults, and how to search it (`objective`, `sampler`, `pruner`,
`budget`, `seed`, `replicates`). Everything is checked when the file is loaded: unknown keys,
wrong types, impossible ranges and search values that would make an invalid trial all fail with
the path of the bad key and, where it helps, the valid choices.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from study.errors import BadInput, StudyError, did_you_mean
from study.schema import (
    GRID_LIMIT,
    CategoricalParam,
    CsvSpec,
    DigitsSpec,
    FixedParam,
    FloatParam,
    GridSpec,
    HyperbandPrunerSpec,
    IntParam,
    MedianPrunerSpec,
    Mnist1dSpec,
    NoPrunerSpec,
    NsgaiiSpec,
    PolynomialSpec,
    RandomSpec,
    SearchParam,
    Setup,
    SweepConfig,
    TpeSpec,
    knobs_read,
)


# --------------------------------------------------------------------------------------- YAML
class _YamlProblem(Exception):
    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a number and refuses duplicate keys.

    PyYAML follows YAML 1.1, where a float needs a dot (`1.0e-3`), so `1e-3` would arrive as a
    string; and it silently keeps the last of two equal keys, which hides typos.
    """

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _YamlProblem(line, f"duplicate key {key!r} (first on line {seen[key]}); keep only one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 reads 12:30:00 as the base-60 integer 45000 and 017 as octal: a sweep file means
# neither, so numbers are decimal (integers also 0x hex) only; anything else stays a string and
# fails validation with a message naming the key.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in _Loader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)

_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)

MAX_FILE_BYTES = 1_000_000  # a sweep file is a page of YAML; refuse megabytes before parsing them
MAX_NUMBER = 1e15  # no setting of a sweep file is near this; larger numbers are typos or attacks
MAX_DEPTH = 20  # sweep files nest four levels deep


MAX_VALUES = 100_000  # keys and values in all, aliases expanded: no sweep file comes close


def _check_values(root: Any) -> None:
    """Every number finite and of sane size; no deeper nesting, and no more values (counting
    what YAML aliases repeat), than a sweep file could need."""
    stack, seen = [(root, "", 0)], 0
    while stack:
        node, path, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise BadInput(f"more than {MAX_VALUES} values (YAML aliases repeating a block?); a sweep file has dozens")
        if depth > MAX_DEPTH:
            raise BadInput(f"{path or 'the file'}: nested more than {MAX_DEPTH} levels deep; a sweep file needs four")
        if isinstance(node, dict):
            stack.extend((value, f"{path}.{key}" if path else str(key), depth + 1) for key, value in node.items())
        elif isinstance(node, list):
            stack.extend((value, f"{path}[{i}]", depth + 1) for i, value in enumerate(node))
        elif isinstance(node, float) and not math.isfinite(node):
            raise BadInput(f"{path}: {node} is not a finite number; write a number")
        elif isinstance(node, (int, float)) and not isinstance(node, bool) and abs(node) > MAX_NUMBER:
            raise BadInput(f"{path}: {float(node):.3g} is far too large for any setting")


def parse_yaml(text: str) -> Any:
    """Parse YAML text with the sweep-file rules (numbers like `1e-3`, no duplicate keys); nesting
    deeper than MAX_DEPTH is refused from the event stream, before the recursive composer runs."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise _YamlProblem(event.start_mark.line + 1, f"nested more than {MAX_DEPTH} levels deep; a sweep file needs four")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


# ------------------------------------------------------------------------------------- errors
_TAGGED = {
    "mnist1d": Mnist1dSpec,
    "digits": DigitsSpec,
    "polynomial": PolynomialSpec,
    "csv": CsvSpec,
    "int": IntParam,
    "float": FloatParam,
    "categorical": CategoricalParam,
    "fixed": FixedParam,
    "tpe": TpeSpec,
    "random": RandomSpec,
    "grid": GridSpec,
    "nsgaii": NsgaiiSpec,
    "median": MedianPrunerSpec,
    "hyperband": HyperbandPrunerSpec,
    "none": NoPrunerSpec,
}


def _model_class(annotation) -> type[BaseModel] | None:
    """The schema class of a field: `X` or `X | None`."""
    candidates = typing.get_args(annotation) or (annotation,)
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


def _model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The schema class whose fields hold the last key of `loc` (pydantic puts union tags in loc)."""
    cls: type[BaseModel] | None = root
    for part in loc[:-1]:
        if part in _TAGGED and (cls is None or part not in cls.model_fields):
            cls = _TAGGED[part]  # type: ignore[assignment]  # a dict of spec classes: mypy sees their metaclass
        elif cls is not None and part in cls.model_fields:
            cls = _model_class(cls.model_fields[part].annotation)
        else:
            cls = None
    return cls


def _readable_path(loc: tuple, data: Any) -> str:
    """Join `loc` with dots, leaving out the union tags pydantic inserts (they are not keys)."""
    parts, node = [], data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        elif not last or part in _TAGGED:
            continue  # a tag such as 'mnist1d' or 'int': not part of the user's file
        parts.append(str(part))
    return ".".join(parts)


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{value!r} ({type(value).__name__})"


_EXPECTED = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def format_error(error: Any, data: Any, root: type[BaseModel] = SweepConfig) -> str:
    """One line for one pydantic error: the key path, what is wrong and how to fix it."""
    loc, kind, ctx = tuple(error["loc"]), error["type"], error.get("ctx") or {}
    path = _readable_path(loc, data)
    value = error.get("input")
    if not path:  # a check across keys: its message names them
        return error["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        cls = _model_at(root, loc)
        allowed = [name for name in cls.model_fields] if cls else []
        hint = did_you_mean(loc[-1], allowed) or (f" (allowed: {', '.join(allowed)})" if allowed else "")
        return f"{path}: unknown key{hint}"
    if kind == "missing":
        return f"{path}: required key is missing"
    if kind == "union_tag_not_found":
        return f"{path}.{ctx.get('discriminator', 'name').strip(chr(39))}: required key is missing"
    if kind == "union_tag_invalid":
        expected = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        field = ctx.get("discriminator", "name").strip("'")
        return (
            f"{path}.{field}: {ctx.get('tag')!r} is not one of {', '.join(expected)}"
            f"{did_you_mean(ctx.get('tag'), expected)}"
        )
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"{path}: {value!r} is not one of {', '.join(expected)}{did_you_mean(value, expected)}"
    if kind in _EXPECTED:
        return f"{path}: expected {_EXPECTED[kind]}, got {_describe(value)}"
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short"):
        message = message.removeprefix("Input ").removeprefix("List ")
        return f"{path}: {message}, got {_describe(value)}"
    return f"{path}: {message}"


def _first_problem(exc: ValidationError, data: Any, root: type[BaseModel] = SweepConfig) -> str:
    errors = exc.errors()
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return format_error(errors[0], data, root) + more


# --------------------------------------------------------------------------------- dotted keys
def set_path(tree: dict, dotted: str, value: Any) -> dict:
    """Return a copy of nested dict `tree` with `dotted` (e.g. 'model.width') set to `value`."""
    head, _, rest = dotted.partition(".")
    copy = dict(tree)
    if rest:
        child = copy.get(head)
        copy[head] = set_path(child if isinstance(child, dict) else {}, rest, value)
    else:
        copy[head] = value
    return copy


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'model': {'width': 64}} -> {'model.width': 64}; lists stay as values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


SETUP_SECTIONS = ("dataset", "model", "train", "compress")


def _setting_paths(setup: dict) -> list[str]:
    """Every dotted key a search may set, for this setup's dataset."""
    return [key for key in flatten(setup) if key != "dataset.name"]


# ---------------------------------------------------------------------------------- the sweep
@dataclass(frozen=True)
class Sweep:
    """A validated sweep file: its config, where it came from and the overrides applied."""

    config: SweepConfig
    path: Path
    text: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        assert self.config.name is not None  # load_sweep fills it in from the file's stem
        return self.config.name

    @property
    def file_hash(self) -> str:
        """sha256 of the file as written (tagged on every run, to tell edited files apart)."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    @property
    def config_hash(self) -> str:
        """sha256 of what the study means, budget, packing and the report's margin excluded: a resumed
        study must match it."""
        meaning = self.config.model_dump(mode="json", exclude={"budget", "description", "pack", "smallest_effect"})
        return hashlib.sha256(json.dumps(meaning, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def directions(self) -> list[Literal["minimize", "maximize"]]:
        return list(self.config.objective.values())

    @property
    def metrics(self) -> list[str]:
        return list(self.config.objective)

    @property
    def searched(self) -> dict[str, SearchParam]:
        """The search entries Optuna samples (fixed entries excluded)."""
        return {k: v for k, v in self.config.search.items() if not isinstance(v, FixedParam)}

    def train_count(self) -> int | None:
        """The count of training examples every trial asks (`dataset.train_size` as an integer, a
        fixed search entry's included; None for a fraction or the whole split), so that a count the
        data cannot supply is refused before any trial runs."""
        size = self.defaults()["dataset"].get("train_size")
        return size if isinstance(size, int) and not isinstance(size, bool) else None

    def searched_train_counts(self) -> list[int]:
        """The counts of training examples the search may ask (a range's highest): a trial that asks
        too many fails alone, and `study validate` warns of it."""
        param = self.searched.get("dataset.train_size")
        values = param.choices if isinstance(param, CategoricalParam) else [param.high] if isinstance(param, IntParam) else []
        return [v for v in values if isinstance(v, int) and not isinstance(v, bool)]

    def unread_compress_knobs(self) -> list[str]:
        """The compress.* knobs the file sets or searches that no trial of this sweep reads, whatever
        method, bit-width, scheme and structure its search gives a trial (`schema.knobs_read`): a
        value that changes nothing (a searched one is never sampled). A warning, not an error: a
        file may set them for a method chosen later with --set."""
        searched = {key.removeprefix("compress.") for key in self.config.search if key.startswith("compress.")}
        given = (set(self.config.compress.model_fields_set) | searched) - {"method"}
        if not given:
            return []
        base = self.defaults()["compress"]
        values = []
        for knob in ("method", "bits", "scheme", "structure"):
            param = self.searched.get(f"compress.{knob}")
            values.append(list(param.choices) if isinstance(param, CategoricalParam)
                          else list(range(param.low, param.high + 1, param.step)) if isinstance(param, IntParam)
                          else [base[knob]])
        read = {knob for method, bits, scheme, structure in itertools.product(*values)
                for knob in knobs_read(str(method), int(bits), str(scheme), str(structure))}
        return sorted(given - read)

    def defaults(self) -> dict:
        """The trial defaults with every fixed search value applied, as a nested dict."""
        return _defaults(self.config)

    def resolve(self, params: dict[str, Any]) -> Setup:
        """The setup of one trial: the defaults with the sampled `params` applied."""
        tree = self.defaults()
        for key, value in params.items():
            tree = set_path(tree, key, value)
        try:
            return Setup.model_validate(tree)
        except ValidationError as exc:
            raise BadInput(f"these values make an invalid trial: {_first_problem(exc, tree, Setup)}") from None

    def grid(self) -> dict[str, list]:
        """The grid sampler's search space: every searched key with its finite list of values."""
        return {key: spec.grid() for key, spec in self.searched.items()}  # type: ignore[union-attr]  # FixedParam is not searched


def _probe(tree: dict, key: str, where: str, value: Any) -> None:
    """Fail if setting `key` to `value` in `tree` makes an invalid trial."""
    tree = set_path(tree, key, value)
    try:
        Setup.model_validate(tree)
    except ValidationError as exc:
        raise ValueError(f"search.{key}.{where}: {_first_problem(exc, tree, Setup)}") from None


def _defaults(config: SweepConfig) -> dict:
    tree = config.model_dump(mode="python", include=set(SETUP_SECTIONS))
    for key, spec in config.search.items():
        if isinstance(spec, FixedParam):
            tree = set_path(tree, key, spec.value)
    return tree


def _check_unread(raw: dict, config: SweepConfig) -> None:
    """A knob the user set that no trial reads would be dropped without a word: 2:4 pruning (the
    two largest of every four weights) has its own sparsity."""
    compress = raw.get("compress")
    given = (isinstance(compress, dict) and "sparsity" in compress) or "compress.sparsity" in config.search
    if config.compress.structure == "2:4" and "compress.structure" not in config.search and given:
        raise ValueError("compress.sparsity: 2:4 pruning keeps the two largest of every four weights (sparsity 0.5) and "
                         "reads no sparsity; remove it, or prune with structure: unstructured")


def _check_setups(config: SweepConfig) -> None:
    """The defaults must make a valid trial, every search key must be a setting, and every value
    a searched key can take must make a valid trial too."""
    base = config.model_dump(mode="python", include=set(SETUP_SECTIONS))
    paths = _setting_paths(base)
    for key in config.search:
        if key == "dataset.name":
            raise ValueError("search.dataset.name: one sweep studies one dataset; write one sweep file per dataset")
        if key not in paths:
            raise ValueError(f"search.{key}: not a setting of this sweep{did_you_mean(key, paths)}")
    for key, spec in config.search.items():
        if isinstance(spec, FixedParam):
            _probe(base, key, "value", spec.value)
    defaults = _defaults(config)
    try:
        Setup.model_validate(defaults)
    except ValidationError as exc:
        raise ValueError(_first_problem(exc, defaults, Setup)) from None
    for key, spec in config.search.items():
        probes: dict[str, Any]
        if isinstance(spec, (IntParam, FloatParam)):
            probes = {"low": spec.low, "high": spec.high}
        elif isinstance(spec, CategoricalParam):
            probes = {f"choices[{i}]": choice for i, choice in enumerate(spec.choices)}
        else:
            continue
        for where, value in probes.items():
            _probe(defaults, key, where, value)
    if config.sampler.name == "grid":
        size = 1
        for key, spec in config.search.items():
            if isinstance(spec, FixedParam):
                continue
            try:
                size *= len(spec.grid())
            except ValueError as exc:
                raise ValueError(f"search.{key}: {exc}") from None
        if size > GRID_LIMIT:
            raise ValueError(f"search: the grid has {size} points; the grid sampler takes at most {GRID_LIMIT}")


def _apply_overrides(raw: dict, overrides: dict[str, Any]) -> dict:
    """`--set key=value` wins over the file; a searched key that is overridden stops being searched."""
    for key, value in overrides.items():
        if key.split(".")[0] == "name":
            raise BadInput("--set name=...: the sweep's name is its file name; copy the file to rename it")
        search = raw.get("search")
        if isinstance(search, dict) and key in search:
            raw = dict(raw, search={k: v for k, v in search.items() if k != key})
        raw = set_path(raw, key, value)
    return raw


def parse_override(text: str) -> tuple[str, Any]:
    """'train.epochs=3' -> ('train.epochs', 3): the value is read as YAML, like the file."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise BadInput(f"--set {text!r}: write KEY=VALUE, e.g. --set train.epochs=3")
    try:
        return key.strip(), parse_yaml(value) if value.strip() else ""
    except (yaml.YAMLError, _YamlProblem) as exc:  # one line: the problem, not the parser's picture of it
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BadInput(f"--set {text!r}: the value is not valid YAML ({problem}); write it as in a sweep file") from None


def _blamed(error: Any, raw: dict, path: Path, overrides: dict[str, Any]) -> str:
    """One problem, on the `--set` that caused it or else on the file."""
    dotted = ".".join(str(part) for part in error["loc"])
    line = format_error(error, raw, SweepConfig)
    if any(dotted == key or dotted.startswith(key + ".") for key in overrides):
        return f"--set {line}"
    return f"{path}: {line}"


def load_sweep(path: str | Path, overrides: dict[str, Any] | None = None) -> Sweep:
    """Read, check and return the sweep file at `path`, with optional dotted-key `overrides`.

    Raises StudyError with a one-line message naming the file, the key path and the fix.
    """
    path = Path(path)
    if path.is_dir():
        raise BadInput(f"{path}: a folder, not a sweep file; give a .yaml file in it")
    if not path.is_file():
        hint = " (sweep files end in .yaml)" if path.suffix not in (".yaml", ".yml") else ""
        raise BadInput(f"{path}: no such sweep file{hint}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise BadInput(f"{path}: {path.stat().st_size} bytes is too large for a sweep file (at most {MAX_FILE_BYTES})")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    try:
        raw = parse_yaml(text)
    except _YamlProblem as exc:
        raise BadInput(f"{path}:{exc.line}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BadInput(f"{path}{where}: not valid YAML: {problem}") from None
    except RecursionError:
        raise BadInput(f"{path}: nested too deeply to read; a sweep file needs four levels") from None
    try:
        _check_values(raw)
        _check_values(overrides or {})
    except StudyError as exc:
        raise BadInput(f"{path}: {exc}") from None
    if raw is None:
        raise BadInput(f"{path}: the file is empty; a sweep file needs at least a dataset (see sweeps/demo.yaml)")
    if not isinstance(raw, dict):
        raise BadInput(f"{path}: a sweep file is a mapping of keys (name, dataset, search, ...), got {_describe(raw)}")
    raw = _apply_overrides(raw, overrides or {})
    stem = path.stem
    if raw.get("name") not in (None, stem):
        raise BadInput(
            f"{path}: name {raw['name']!r} differs from the file name {stem!r}; the file name is the "
            "sweep's name, so remove the key or rename the file"
        )
    raw = dict(raw, name=stem)
    try:
        config = SweepConfig.model_validate(raw)
        _check_setups(config)
        _check_unread(raw, config)
    except ValidationError as exc:
        problems = list(dict.fromkeys(_blamed(error, raw, path, overrides or {}) for error in exc.errors()))
        more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
        raise BadInput(problems[0] + more, problems) from None
    except (ValueError, OverflowError) as exc:
        raise BadInput(f"{path}: {exc}") from None
    return Sweep(config=config, path=path, text=text, overrides=dict(overrides or {}))
