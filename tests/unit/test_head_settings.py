"""`make run` reusing a running head: the settings check, run as the Makefile runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(command: str, path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RNNSERVE_")}
    return subprocess.run([sys.executable, "scripts/head_settings.py", command, str(path)],
                          cwd=REPO, env={**base, **env}, capture_output=True, text=True)


def test_a_head_with_other_settings_is_not_reused(tmp_path):
    recorded = tmp_path / "head.json"
    storage = str(tmp_path / "storage")
    assert run("record", recorded, RNNSERVE_STORAGE=storage).returncode == 0
    assert "secret-key" not in recorded.read_text()
    assert run("check", recorded, RNNSERVE_STORAGE=storage).returncode == 0
    refused = run("check", recorded, RNNSERVE_STORAGE=storage, RNNSERVE_API_KEY="secret-key")
    assert refused.returncode == 1 and "RNNSERVE_API_KEY" in refused.stderr
    assert "secret-key" not in refused.stderr and "RNNSERVE_STORAGE" not in refused.stderr
    unknown = run("check", tmp_path / "missing.json", RNNSERVE_STORAGE=storage)
    assert unknown.returncode == 1  # a head this tool did not start: settings unknown
