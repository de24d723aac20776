"""Schemathesis fuzzes every operation of the live app's /openapi.json: no 5xx, and responses
that the schema documents must match it. `make fuzz` runs more examples.

(The schemathesis CLI, not its pytest plugin: the plugin's lazy fixture loader does not work
with pytest 9.)"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import BIN, REPO

pytestmark = pytest.mark.integration
EXAMPLES = os.environ.get("RNNSERVE_FUZZ_EXAMPLES", "25")


def test_no_server_errors_and_documented_responses(serve_app, tmp_path):
    result = subprocess.run(
        [str(BIN / "st"), "run", f"{serve_app}/openapi.json",
         "--checks", "not_a_server_error,response_schema_conformance",
         # From this machine's address, whose inference bucket the other tests share: a
         # route's 25 examples stay within its burst (200), and a 429 would be no failure.
         "--max-examples", EXAMPLES, "--seed", "1", "--request-timeout", "60"],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
        env={**os.environ, "HOME": str(tmp_path), "SCHEMATHESIS_TELEMETRY": "false"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "passed" in output.lower()
