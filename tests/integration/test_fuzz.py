"""Schemathesis fuzzes every operation of the live app's /openapi.json: no 5xx, and responses
that the schema documents must match it. `make fuzz` runs more examples."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

pytestmark = pytest.mark.integration
EXAMPLES = int(os.environ.get("RNNSERVE_FUZZ_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def api_schema(serve_app):
    return schemathesis.openapi.from_url(f"{serve_app}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=True)
def test_no_server_errors_and_documented_responses(case, serve_app):
    # Its own rate-limit bucket, so the fuzzer is not throttled into 429s only.
    case.call_and_validate(base_url=serve_app, headers={"Authorization": "Bearer fuzzer"},
                           checks=[not_a_server_error, response_schema_conformance],
                           timeout=60)
