"""Mutated sweep files for the loader's fuzz test: run as a script in a memory-capped process.

    python tests/fuzz_sweeps.py SEED COUNT FOLDER

Prints one line per file, `<outcome> <seconds> <name>`, where outcome is `ok`, `bad` (a one-line
BadInput) or `crash:<type>` (anything else: a bug).
"""

from __future__ import annotations

import random
import re
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTREMES = ["-1", "0", "1e9", "1e300", "-1e300", ".inf", "-.inf", ".nan", "12:30:00", "017", "0x7fffffff",
            str(10**30), "1000000000", "1e-9", "true", "null", "[]", "{}", "'\\x00'", "~", "-0.0", "2147483647"]
STRINGS = ["", "é", "\u202e", "<script>", "a" * 300, "'", "\"", "mlp\x00", "None", "NaN"]


def mutate(text: str, rng: random.Random) -> bytes:
    lines = text.splitlines()
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(7)
        i = rng.randrange(len(lines)) if lines else 0
        if op == 0 and lines:  # a number becomes an extreme
            lines[i] = re.sub(r"(?<=[\s\[,:])-?[0-9][0-9.e_-]*", lambda m: rng.choice(EXTREMES), lines[i], count=1)
        elif op == 1 and lines:  # a value becomes an odd string
            value = ": " + repr(rng.choice(STRINGS))
            lines[i] = re.sub(r":\s*\S.*$", lambda m, value=value: value, lines[i])
        elif op == 2 and lines:
            del lines[i]
        elif op == 3 and lines:
            lines.insert(i, lines[i])
        elif op == 4:  # deep nesting
            depth = rng.choice([30, 1000, 5000])
            lines.append("deep: " + "[" * depth + "]" * depth)
        elif op == 5:  # an alias bomb
            lines += ["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [f"a{k}: &a{k} [*a{'' if k == 0 else k - 1}, *a{'' if k == 0 else k - 1}, *a{'' if k == 0 else k - 1}, *a{'' if k == 0 else k - 1}, *a{'' if k == 0 else k - 1}, *a{'' if k == 0 else k - 1}, *a{'' if k == 0 else k - 1}, *a{'' if k == 0 else k - 1}, *a{'' if k == 0 else k - 1}, *a{'' if k == 0 else k - 1}]" for k in range(8)]
        else:  # a grid over a huge range
            lines.append("  model.width: {type: int, low: 1, high: 1000000000}")
    data = "\n".join(lines).encode()
    if rng.random() < 0.05:
        data = data.replace(b"a", b"\xff\xfe", 1)  # not UTF-8
    return data


def main() -> int:
    seed, count, folder = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))  # a runaway loader dies, it does not swap
    sys.setrecursionlimit(3000)
    from study.config import load_sweep
    from study.errors import BadInput

    rng = random.Random(seed)
    sources = sorted((ROOT / "sweeps").glob("*.yaml"))
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        source = rng.choice(sources)
        path = folder / f"{source.stem}.yaml"
        path.write_bytes(mutate(source.read_text(), rng))
        start = time.perf_counter()
        try:
            load_sweep(path)
            outcome = "ok"
        except BadInput as exc:
            outcome = "bad" if "\n" not in str(exc) else "multiline"
        except Exception as exc:  # noqa: BLE001 - the test reports any other exception as a crash
            outcome = f"crash:{type(exc).__name__}:{str(exc)[:80]!r}"
        print(f"{outcome} {time.perf_counter() - start:.3f} {n}", flush=True)
        (folder / f"{n:04d}.yaml").write_bytes(path.read_bytes())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
