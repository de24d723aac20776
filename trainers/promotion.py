"""The promotion gate: a finished version takes `production` only if it beats the incumbent on
the same data, the incumbent's held-out data.

Each version's own validation score is measured on its own held-out data, so two versions'
recorded scores say nothing of each other (a model trained on a repetitive text scores
"better" on its own tail). The gate loads both versions and measures them on production's
held-out data; versions that cannot be measured on it (another vocabulary, no held-out data)
are never promoted automatically. The alias moves with a compare-and-set, so of two versions
finishing together the better one ends up in production.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from registry import PRODUCTION, Registry
from trainers.training_job import NotComparable

if TYPE_CHECKING:
    from trainers.families import Family


def promote_if_better(registry: Registry, family: Family, name: str, version: int,
                      log: Callable[[str], None], attempts: int = 5) -> bool:
    """Move `production` to `version` when it beats the incumbent; log the decision and both
    scores."""
    for _ in range(attempts):
        incumbent = registry.get_alias(name, PRODUCTION)
        if incumbent is None:
            if registry.move_alias(name, PRODUCTION, version, expected=None):
                log(f"promoted version {version} to {PRODUCTION} (first ready version)")
                return True
            continue  # another version got there first: compare with it
        try:
            _, candidate_dir = registry.fetch_version(name, version)
            _, incumbent_dir = registry.fetch_version(name, incumbent)
            candidate, current = family.heldout_scores(candidate_dir, incumbent_dir)
        except NotComparable as reason:
            log(f"version {version} stays a candidate: {reason} (promote it by hand to serve it)")
            return False
        measured = (f"{family.score.name} on version {incumbent}'s held-out data "
                    f"{candidate:.4f} (version {version}) vs {current:.4f} (version {incumbent})")
        if not family.score.beats(candidate, current):
            log(f"version {version} stays a candidate: {measured}")
            return False
        if registry.move_alias(name, PRODUCTION, version, expected=incumbent):
            log(f"promoted version {version} to {PRODUCTION}: {measured}")
            return True
        log(f"{PRODUCTION} moved while version {version} was compared; comparing again")
    log(f"version {version} stays a candidate: {PRODUCTION} kept moving")
    return False
