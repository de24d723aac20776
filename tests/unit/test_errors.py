"""Errors leave the API as JSON: integers bounded to what the registry's columns hold, and a
catch-all that answers an unexpected exception with a JSON 500 without its detail (no Ray)."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from deployments.errors import install_error_handlers
from deployments.schemas import DB_INT_MAX, GenerateRequest, PromoteRequest


def test_catch_all_is_a_json_500_without_detail_and_logs_it(caplog):
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom():
        raise OverflowError("Python int too large to convert to SQLite INTEGER "
                            "in /srv/rnnserve/registry/store.py")

    with caplog.at_level(logging.ERROR):
        response = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "internal server error", "detail": None}
    assert "store.py" not in response.text and "Traceback" not in response.text
    logged = "\n".join(r.getMessage() + str(r.exc_info) for r in caplog.records)
    assert "GET /boom" in logged and "OverflowError" in logged


@pytest.mark.parametrize("model, body", [
    (PromoteRequest, {"version": 10**20}),
    (PromoteRequest, {"version": DB_INT_MAX + 1}),
    (GenerateRequest, {"version": 10**20}),
])
def test_versions_beyond_the_column_type_are_invalid(model, body):
    with pytest.raises(ValidationError):
        model.model_validate(body)
    assert model.model_validate({**body, "version": DB_INT_MAX}).version == DB_INT_MAX
