"""Benchmarks of training, sampling and the classifier (`make bench-train`, `bench-sampling`,
`bench-classifier`); their figures and plots are written to `benchmarks/results/`, which
BENCHMARKS.md reports. The paths every benchmark and load run shares are declared here."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the repository root
RESULTS = REPO / "benchmarks" / "results"  # JSON and plots behind BENCHMARKS.md
# The shared corpora (tinyshakespeare.txt, mnist/), beside the repository unless set.
SHARED_DATA = Path(os.environ.get("RNNSERVE_SHARED_DATA", REPO.parent / "shared" / "data"))
