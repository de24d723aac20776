"""The registry's change counter and the cache built on it, on real SQLite, PostgreSQL and
MariaDB (no Ray): every write that changes what is served moves it, reads and log lines do
not, and a cached answer never outlives a promotion, a new ready version or a deletion."""

from __future__ import annotations

import threading

import pytest

from registry import PRODUCTION, CachedVersions, NotFound
from tests.unit.test_registry import artifacts


def ready_version(registry, tmp_path, name: str = "m") -> int:
    version = registry.create_version(name).version
    registry.publish_version(name, version, artifacts(tmp_path))
    return version


def test_served_state_writes_move_the_counter_and_reads_do_not(registry, tmp_path):
    seen = [registry.change_count()]

    def moved() -> bool:
        seen.append(registry.change_count())
        return seen[-1] > seen[-2]

    registry.create_version("m")
    assert moved()
    registry.publish_version("m", 1, artifacts(tmp_path))
    assert moved()
    registry.set_alias("m", PRODUCTION, 1)
    assert moved()
    registry.update_version("m", 1, metrics={"val_loss": 1.0})
    assert moved()
    registry.get_version("m")
    registry.list_models()
    registry.append_logs("m", 1, ["a log line is not a served change"])
    assert not moved()
    registry.delete_model("m")
    assert moved()


def cache_of(registry) -> tuple[CachedVersions, list]:
    """The cache, and the calls it made to the registry's get_version."""
    calls = []

    def get_version(name, version=None):
        calls.append((name, version))
        return registry.get_version(name, version)

    return CachedVersions(get_version, registry.change_count), calls


def test_the_cache_reuses_an_answer_until_the_registry_changes(registry, tmp_path):
    cache, calls = cache_of(registry)
    ready_version(registry, tmp_path)
    assert cache.get_version("m").version == 1
    assert cache.get_version("m").version == 1
    assert len(calls) == 1  # the second answer came from the cache
    ready_version(registry, tmp_path)  # v2 ready: what "no version" serves (no production)
    assert cache.get_version("m").version == 2
    registry.set_alias("m", PRODUCTION, 1)  # a promotion: the next request sees it
    assert cache.get_version("m").version == 1
    registry.delete_model("m")
    with pytest.raises(NotFound):
        cache.get_version("m")
    with pytest.raises(NotFound):  # errors are never kept
        cache.get_version("m")
    assert len(calls) == 5


def test_an_answer_read_before_a_change_is_not_served_after_it(registry, tmp_path):
    """The race a cache can lose: a reader fetches v1, a promotion lands, the reader stores
    its answer. It was read under the old counter, so the next call must not reuse it."""
    ready_version(registry, tmp_path)
    ready_version(registry, tmp_path)
    registry.set_alias("m", PRODUCTION, 1)
    fetched, promoted = threading.Event(), threading.Event()

    def slow_get_version(name, version=None):
        record = registry.get_version(name, version)
        fetched.set()
        promoted.wait(10)  # the promotion lands between the read and the store
        return record

    cache = CachedVersions(slow_get_version, registry.change_count)
    reader = threading.Thread(target=cache.get_version, args=("m",))
    reader.start()
    assert fetched.wait(10)
    registry.set_alias("m", PRODUCTION, 2)
    promoted.set()
    reader.join(10)
    assert cache.get_version("m").version == 2
