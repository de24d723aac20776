"""Settings handed to a training job carry no secret; each process takes the database password
and S3 credentials from its own environment."""

from __future__ import annotations

import pytest

from registry import Settings

PG = "postgresql+psycopg://rnnserve@db.internal:5432/rnnserve?sslmode=require"


@pytest.fixture()
def node_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.delenv("RNNSERVE_DB_PASSWORD", raising=False)
    return monkeypatch


def test_a_jobs_environment_has_the_url_without_its_password_and_no_credentials(node_env):
    settings = Settings.from_env(storage="s3://bucket/p", s3_endpoint="http://s3.local",
                                 db_url=PG.replace("rnnserve@", "rnnserve:p%40ss@"))
    env = settings.to_env()
    assert env == {"RNNSERVE_STORAGE": "s3://bucket/p", "RNNSERVE_DB_URL": PG,
                   "RNNSERVE_S3_ENDPOINT": "http://s3.local"}
    assert "p%40ss" in settings.db_url  # this process keeps what it was given


def test_the_password_comes_from_the_nodes_environment_when_the_url_has_none(node_env):
    node_env.setenv("RNNSERVE_DB_PASSWORD", "p@ss")
    assert Settings.from_env(db_url=PG).db_url == PG.replace("rnnserve@", "rnnserve:p%40ss@")
    own = PG.replace("rnnserve@", "rnnserve:own@")
    assert Settings.from_env(db_url=own).db_url == own  # a URL's own password wins
    sqlite = "sqlite:////tmp/registry.db"
    assert Settings.from_env(db_url=sqlite).db_url == sqlite  # no user, nothing to fill
