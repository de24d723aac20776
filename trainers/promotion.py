"""The promotion gate: a finished version takes `production` only if it beats the incumbent."""

from __future__ import annotations

from collections.abc import Callable

from registry import PRODUCTION, NotFound, Registry
from trainers.training_job import Score


def promote_if_better(registry: Registry, name: str, version: int, score: Score,
                      log: Callable[[str], None]) -> bool:
    """Move `production` to `version` when its validation score is better; log the decision."""
    candidate = registry.get_version(name, version).metrics.get(score.name)
    current_version = registry.get_alias(name, PRODUCTION)
    if current_version is None:
        registry.set_alias(name, PRODUCTION, version)
        log(f"promoted version {version} to {PRODUCTION} (first ready version)")
        return True
    try:
        current = registry.get_version(name, current_version).metrics.get(score.name)
    except NotFound:
        current = None
    if candidate is None:
        log(f"version {version} stays a candidate: it has no {score.name}")
        return False
    if current is not None and not score.beats(candidate, current):
        log(f"version {version} stays a candidate: {score.name} {candidate:.4f} does not beat "
            f"{PRODUCTION} version {current_version} ({current:.4f})")
        return False
    registry.set_alias(name, PRODUCTION, version)
    shown = "none" if current is None else f"{current:.4f}"
    log(f"promoted version {version} to {PRODUCTION}: {score.name} {candidate:.4f} beats "
        f"version {current_version} ({shown})")
    return True
