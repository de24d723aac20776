"""Where the registry keeps its records and artifacts, read from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    storage: str  # local path / NFS mount, or s3://bucket/prefix
    db_url: str  # any SQLAlchemy URL
    api_key: str | None = None
    s3_endpoint: str | None = None  # for S3-compatible stores (MinIO, moto, ...)

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        env = os.environ
        storage = overrides.get("storage") or env.get("RNNSERVE_STORAGE") or "./storage"
        if "://" not in storage:
            storage = os.path.abspath(storage)
        default_db = (f"sqlite:///{os.path.join(storage, 'registry.db')}" if "://" not in storage
                      else f"sqlite:///{os.path.abspath('registry.db')}")
        return cls(
            storage=storage,
            db_url=overrides.get("db_url") or env.get("RNNSERVE_DB_URL") or default_db,
            api_key=overrides.get("api_key") or env.get("RNNSERVE_API_KEY") or None,
            s3_endpoint=(overrides.get("s3_endpoint") or env.get("RNNSERVE_S3_ENDPOINT")
                         or env.get("AWS_ENDPOINT_URL") or None),
        )
