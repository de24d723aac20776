"""The models a replica holds, under ids that are never reused, and their release once the
registry no longer has them.

A model id is `name:version@<content digest>` (VersionRecord.model_id): a model deleted and
re-created under the same name gets new ids, so a warm replica can never answer with the old
weights. Serve's multiplexing keeps an LRU of *slots*; the models themselves live here, so a
replica can drop a deleted model at once instead of when the LRU gets to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from registry import NotFound, Registry, format_model_ref, parse_model_id

logger = logging.getLogger("ray.serve")
FORGET_INTERVAL_S = 10.0  # how soon a replica notices that a model it holds was deleted


def model_tags(model_id: str) -> dict[str, str]:
    """Metric tags: the version as users name it (`name:version`)."""
    name, version, _ = parse_model_id(model_id)
    return {"model": format_model_ref(name, version)}


class ModelSlot:
    """What Serve's multiplexed LRU keeps for a model; its eviction releases the model."""

    def __init__(self, models: LoadedModels, model_id: str, token: object):
        self.models, self.model_id, self.token = models, model_id, token

    def __del__(self):
        self.models.release(self.model_id, self.token)


class LoadedModels:
    def __init__(self, registry: Registry, build: Callable[[str, str], Awaitable[Any]],
                 release: Callable[[Any], None]):
        """`build(model_id, directory)` loads a version's files; `release(model)` lets it go."""
        self.registry, self._build, self._release = registry, build, release
        self._models: dict[str, tuple[object, Any]] = {}  # model id -> (load token, model)

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._models

    async def load(self, model_id: str) -> ModelSlot:
        name, version, _ = parse_model_id(model_id)
        record, directory = await asyncio.to_thread(self.registry.fetch_version, name, version)
        if record.model_id != model_id:
            raise NotFound(f"version {version} of {name!r} was deleted (now another model)")
        token = object()
        self._models[model_id] = (token, await self._build(model_id, directory))
        return ModelSlot(self, model_id, token)

    def get(self, model_id: str) -> Any:
        entry = self._models.get(model_id)
        if entry is None:
            raise NotFound(f"model {model_id} was deleted")
        return entry[1]

    def release(self, model_id: str, token: object | None = None) -> None:
        """Let a model go; with a token, only the load it names (a late eviction of an
        earlier load must not drop a newer one)."""
        entry = self._models.get(model_id)
        if entry is not None and (token is None or entry[0] is token):
            del self._models[model_id]
            self._release(entry[1])

    async def forget_deleted(self, interval_s: float = FORGET_INTERVAL_S) -> None:
        """Forever: release every held model whose version the registry no longer has."""
        while True:
            await asyncio.sleep(interval_s)
            for model_id in list(self._models):
                try:
                    if not await asyncio.to_thread(self._still_registered, model_id):
                        logger.info("releasing %s: deleted from the registry", model_id)
                        self.release(model_id)
                except Exception:  # noqa: BLE001 - a failed check must not end the loop
                    logger.exception("checking whether %s still exists", model_id)

    def _still_registered(self, model_id: str) -> bool:
        name, version, _ = parse_model_id(model_id)
        try:
            return self.registry.get_version(name, version).model_id == model_id
        except NotFound:
            return False
