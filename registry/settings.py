"""Where the registry keeps its records and artifacts, read from the environment."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from sqlalchemy.engine import make_url

# The environment variables a process reads its settings from (a job's driver is handed them).
STORAGE_ENV = "RNNSERVE_STORAGE"
DB_URL_ENV = "RNNSERVE_DB_URL"
API_KEY_ENV = "RNNSERVE_API_KEY"
S3_ENDPOINT_ENV = "RNNSERVE_S3_ENDPOINT"
# The database password, when the URL has none: each node's own environment holds it (see
# cluster.yaml), so it never travels in a job's submission, which the dashboard shows anyone.
DB_PASSWORD_ENV = "RNNSERVE_DB_PASSWORD"


@dataclass(frozen=True)
class Settings:
    storage: str  # local path / NFS mount, or s3://bucket/prefix
    db_url: str  # any SQLAlchemy URL
    api_key: str | None = None
    s3_endpoint: str | None = None  # for S3-compatible stores (MinIO, moto, ...)

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        env = os.environ
        storage = overrides.get("storage") or env.get(STORAGE_ENV) or "./storage"
        if "://" not in storage:
            storage = os.path.abspath(storage)
        default_db = (f"sqlite:///{os.path.join(storage, 'registry.db')}" if "://" not in storage
                      else f"sqlite:///{os.path.abspath('registry.db')}")
        return cls(
            storage=storage,
            db_url=_fill_password(overrides.get("db_url") or env.get(DB_URL_ENV) or default_db,
                                  env.get(DB_PASSWORD_ENV)),
            api_key=overrides.get("api_key") or env.get(API_KEY_ENV) or None,
            s3_endpoint=(overrides.get("s3_endpoint") or env.get(S3_ENDPOINT_ENV)
                         or env.get("AWS_ENDPOINT_URL") or None),
        )

    @staticmethod
    def add_flags(parser) -> None:
        """`--storage` and `--db_url` for a command-line tool (the environment otherwise)."""
        parser.add_argument("--storage", default=None, help=f"storage root (env {STORAGE_ENV})")
        parser.add_argument("--db_url", default=None, help=f"registry database (env {DB_URL_ENV})")

    @classmethod
    def from_flags(cls, args) -> Settings:
        return cls.from_env(storage=args.storage, db_url=args.db_url)

    def fingerprints(self) -> dict[str, str]:
        """A short hash of each setting, to tell whether two processes share them without
        writing a secret anywhere."""
        return {name: hashlib.sha256(str(value).encode()).hexdigest()[:16]
                for name, value in ((STORAGE_ENV, self.storage), (DB_URL_ENV, self.db_url),
                                    (API_KEY_ENV, self.api_key),
                                    (S3_ENDPOINT_ENV, self.s3_endpoint))}

    def to_env(self) -> dict[str, str]:
        """What a training job needs in its environment to reach the same registry and storage,
        secrets left out: a job's environment is shown in the dashboard's job list. The job
        takes the database password and S3 credentials from its node, as this process does
        (RNNSERVE_DB_PASSWORD; AWS_* or the instance profile)."""
        env = {STORAGE_ENV: self.storage, DB_URL_ENV: _without_password(self.db_url)}
        if self.s3_endpoint:
            env[S3_ENDPOINT_ENV] = self.s3_endpoint
        return env


def _fill_password(url: str, password: str | None) -> str:
    """`url` with `password` filled in when it has none of its own."""
    parsed = make_url(url)
    if not password or parsed.password or not parsed.username:
        return url
    return parsed.set(password=password).render_as_string(hide_password=False)


def _without_password(url: str) -> str:
    parsed = make_url(url)
    if parsed.password is None:
        return url
    return parsed._replace(password=None).render_as_string(hide_password=False)
