"""Model names and references.

Names become storage paths and URL parts, so only a safe alphabet is allowed. A reference
`NAME` or `NAME:VERSION` names one version (the production one when no version is given).
"""

from __future__ import annotations

import re

from registry.artifacts import DIGEST_CHARS
from registry.errors import InvalidName

NAME_CHARS = "A-Za-z0-9._-"  # what names are made of, as the body of a regex character class
_NAME = re.compile(rf"[A-Za-z0-9][{NAME_CHARS}]{{0,63}}")


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidName(
            f"invalid model name {name!r}: use 1-64 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit, without '..'")
    return name


def parse_model_ref(reference: str) -> tuple[str, int | None]:
    """`NAME` or `NAME:VERSION` -> (name, version or None)."""
    name, _, version = reference.partition(":")
    if not name or (version and not version.isdigit()):
        raise ValueError(f"expected NAME or NAME:VERSION, got {reference!r}")
    return name, int(version) if version else None


def format_model_ref(name: str, version: int) -> str:
    return f"{name}:{version}"


def format_model_id(name: str, version: int, identity: str) -> str:
    """A version's model id, `NAME:VERSION@IDENTITY` (see VersionRecord.model_id)."""
    return f"{format_model_ref(name, version)}@{identity[:DIGEST_CHARS]}"


def parse_model_id(model_id: str) -> tuple[str, int, str]:
    """`NAME:VERSION@IDENTITY` -> (name, version, identity)."""
    reference, _, identity = model_id.partition("@")
    name, version = parse_model_ref(reference)
    if version is None or not identity:
        raise ValueError(f"expected NAME:VERSION@IDENTITY, got {model_id!r}")
    return name, version, identity
