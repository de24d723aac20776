"""Model registry: records in a SQL database, artifacts on shared storage."""

from registry.artifacts import ArtifactStore
from registry.changes import CachedVersions
from registry.errors import Conflict, InvalidName, NotFound, RegistryError
from registry.names import (
    format_model_ref,
    parse_model_id,
    parse_model_ref,
    validate_name,
)
from registry.settings import Settings
from registry.store import ACTIVE, PRODUCTION, STATUSES, Registry, VersionRecord

__all__ = ["ACTIVE", "PRODUCTION", "STATUSES", "ArtifactStore", "CachedVersions", "Conflict",
           "InvalidName", "NotFound", "Registry", "RegistryError", "Settings", "VersionRecord",
           "format_model_ref", "parse_model_id", "parse_model_ref", "validate_name"]
