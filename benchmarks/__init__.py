"""Benchmarks of training, sampling and the classifier (`make bench-train`, `bench-sampling`,
`bench-classifier`); their figures and plots are written to `benchmarks/results/`, which
BENCHMARKS.md reports. The paths every benchmark and load run shares are declared here, and
how a benchmark trains."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from models.vocab import Vocab

REPO = Path(__file__).resolve().parents[1]  # the repository root
RESULTS = REPO / "benchmarks" / "results"  # JSON and plots behind BENCHMARKS.md
# The shared corpora (tinyshakespeare.txt, mnist/), beside the repository unless set.
SHARED_DATA = Path(os.environ.get("RNNSERVE_SHARED_DATA", REPO.parent / "shared" / "data"))


def shakespeare_vocab() -> Vocab:
    """The vocabulary of the sampling benchmarks' models: tinyshakespeare's characters (a cap of
    3500 that the corpus stays under)."""
    text = (SHARED_DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")
    return Vocab.from_text(text, 3500)


def run_trainer(family: str, flags: list[str]) -> None:
    """Train through the family's documented command, `python -m trainers.<family> ...` (the
    same as `ray job submit` and the HTTP upload run); raises if it fails."""
    code = subprocess.run([sys.executable, "-m", f"trainers.{family}", *flags], cwd=REPO).returncode
    if code != 0:
        raise RuntimeError(f"python -m trainers.{family} failed with exit code {code}")
