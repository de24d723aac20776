"""The replicas' model cache on a real registry (SQLite, no Ray): ids never reused, deleted
models released, late evictions harmless."""

from __future__ import annotations

import asyncio

import pytest

from deployments.model_cache import LoadedModels
from registry import NotFound, Registry, Settings


@pytest.fixture()
def registry(tmp_path) -> Registry:
    return Registry(Settings.from_env(storage=str(tmp_path / "storage"),
                                      db_url=f"sqlite:///{tmp_path}/registry.db"))


def publish(registry: Registry, tmp_path, name: str, weights: str):
    registry.create_version(name)
    out = tmp_path / f"out-{weights}"
    out.mkdir()
    (out / "model.weights.h5").write_text(weights)
    return registry.publish_version(name, registry.list_versions(name)[-1].version, str(out))


def cache(registry: Registry):
    released = []

    async def build(model_id: str, directory: str) -> str:
        with open(f"{directory}/model.weights.h5") as f:
            return f.read()

    return LoadedModels(registry, build, released.append), released


def test_a_deleted_model_is_released_and_its_id_never_loads_again(registry, tmp_path):
    async def scenario():
        models, released = cache(registry)
        old = publish(registry, tmp_path, "m", "old weights")
        slot = await models.load(old.model_id)
        assert models.get(old.model_id) == "old weights"

        registry.delete_model("m")
        new = publish(registry, tmp_path, "m", "new weights")
        assert new.version == old.version and new.model_id != old.model_id
        forget = asyncio.create_task(models.forget_deleted(interval_s=0.01))
        await asyncio.sleep(0.2)
        forget.cancel()
        assert released == ["old weights"] and old.model_id not in models
        with pytest.raises(NotFound):
            models.get(old.model_id)
        with pytest.raises(NotFound):
            await models.load(old.model_id)  # the id now names nothing
        new_slot = await models.load(new.model_id)  # held, as Serve's LRU holds it
        assert models.get(new.model_id) == "new weights"
        del slot  # Serve's LRU evicting the old slot late must not touch the new model
        assert models.get(new.model_id) == "new weights" and released == ["old weights"]
        del new_slot

    asyncio.run(scenario())


def test_lru_eviction_releases_only_its_own_load(registry, tmp_path):
    async def scenario():
        models, released = cache(registry)
        record = publish(registry, tmp_path, "m", "weights")
        first = await models.load(record.model_id)
        second = await models.load(record.model_id)  # loaded again after an eviction race
        del first
        assert record.model_id in models and released == []
        del second
        assert record.model_id not in models and released == ["weights"]

    asyncio.run(scenario())
