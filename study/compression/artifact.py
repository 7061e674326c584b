"""What a compression trial writes: a file, what it is, and whether a runtime runs it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Artifact:
    path: Path
    kind: str  # what it is, in words
    deployable: bool  # True: runs on the TFLite interpreter; False: our own loader only
    bits: int
