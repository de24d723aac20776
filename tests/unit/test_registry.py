"""Registry on real SQLite, PostgreSQL and MariaDB databases (no Ray): CRUD, numbering, atomic
ready, concurrency, text in any language."""

from __future__ import annotations

import multiprocessing
import os
import threading

import pytest
import sqlalchemy as sa

from registry import Conflict, InvalidName, NotFound, Registry, Settings


def artifacts(tmp_path, files=("model.weights.h5", "config.json")) -> str:
    directory = tmp_path / "out"
    directory.mkdir(exist_ok=True)
    for name in files:
        (directory / name).write_text(name)
    return str(directory)


def test_versions_are_numbered_per_model_and_start_queued(registry):
    assert [registry.create_version("a").version for _ in range(3)] == [1, 2, 3]
    assert registry.create_version("b", params={"lstm_size": 8}).version == 1
    record = registry.get_version("b", 1)
    assert record.status == "queued" and record.params == {"lstm_size": 8}
    with pytest.raises(Conflict, match="charrnn"):
        registry.create_version("a", kind="lstm-classifier")


def test_publish_makes_ready_only_with_all_files(registry, tmp_path):
    registry.create_version("m")
    with pytest.raises(NotFound):
        registry.get_version("m")  # nothing ready yet
    record = registry.publish_version("m", 1, artifacts(tmp_path), {"val_loss": 1.5})
    assert record.status == "ready" and record.metrics == {"val_loss": 1.5}
    _, directory = registry.fetch_version("m")
    assert sorted(os.listdir(directory)) == ["config.json", "model.weights.h5"]


def test_a_failed_publish_leaves_the_version_not_ready(registry, tmp_path):
    registry.create_version("m")
    with pytest.raises(FileNotFoundError):
        registry.publish_version("m", 1, str(tmp_path / "missing-dir"))
    record = registry.get_version("m", 1)
    assert record.status == "queued" and record.artifact_uri is None
    assert not registry.artifacts.exists("models/m/v1")


def test_ready_is_only_reached_through_publish_and_terminal_states_are_final(registry, tmp_path):
    registry.create_version("m")
    with pytest.raises(ValueError):
        registry.update_version("m", 1, status="ready")
    registry.update_version("m", 1, status="training")
    registry.update_version("m", 1, status="cancelled")
    with pytest.raises(Conflict):
        registry.update_version("m", 1, status="training")  # a late job update can't revive it
    with pytest.raises(Conflict):
        registry.publish_version("m", 1, artifacts(tmp_path))


def test_ending_a_version_logs_why_before_its_status_changes(registry):
    registry.create_version("m", status="training")
    registry.end_version("m", 1, "failed", "error: out of memory\nwhile loading")
    assert registry.get_version("m", 1).status == "failed"
    assert registry.read_logs("m", 1) == ["error: out of memory", "while loading"]
    with pytest.raises(ValueError):
        registry.end_version("m", 1, "ready", "done")  # ready comes only through publish
    with pytest.raises(Conflict):  # already ended: the reason is logged, the status stays
        registry.end_version("m", 1, "cancelled", "too late")
    assert registry.get_version("m", 1).status == "failed"


@pytest.mark.parametrize("name", ["", "../x", "a/b", "x" * 65, "-lead", "a..b", "naïve", "a b"])
def test_invalid_names_are_refused(registry, name):
    with pytest.raises(InvalidName):
        registry.create_version(name)


def test_aliases_follow_promotion_and_refuse_unready_versions(registry, tmp_path):
    for _ in range(3):
        registry.create_version("m")
    registry.publish_version("m", 1, artifacts(tmp_path))
    registry.publish_version("m", 2, artifacts(tmp_path))
    assert registry.get_version("m").version == 2  # latest ready without an alias
    registry.set_alias("m", "production", 1)
    assert registry.get_version("m").version == 1 and registry.get_alias("m", "production") == 1
    with pytest.raises(Conflict):
        registry.set_alias("m", "production", 3)  # still queued
    with pytest.raises(NotFound):
        registry.set_alias("m", "production", 9)


def test_delete_removes_records_and_files(registry, tmp_path):
    registry.create_version("gone")
    store = registry.artifacts
    store.put_bytes(store.upload_path("gone", "x.txt"), b"text")
    store.put_bytes(f"{store.runs_path('gone')}/v1-20261122T000000000000/state.json", b"{}")
    store.put_bytes(f"{store.runs_path('gone-other')}/v1/state.json", b"{}")  # another model
    registry.publish_version("gone", 1, artifacts(tmp_path))
    registry.delete_model("gone")
    with pytest.raises(NotFound):
        registry.get_model("gone")
    assert not store.exists("models/gone")
    assert not store.exists(store.upload_path("gone", "x.txt").rsplit("/", 1)[0])
    assert not store.exists(store.runs_path("gone")) and store.exists(store.runs_path("gone-other"))
    assert registry.list_models() == []


def test_log_lines_round_trip_any_language_in_order(registry):
    registry.create_version("m")
    lines = ["step 1 loss 4.1", "Ça va — 日本語のテキスト", "emoji 🎭", ""]
    assert registry.append_logs("m", 1, lines) == 4
    assert registry.read_logs("m", 1) == lines
    assert registry.read_logs("m", 1, offset=1, limit=2) == lines[1:3]


def test_concurrent_version_creation_from_threads_gets_distinct_numbers(registry):
    numbers, errors = [], []

    def create():
        try:
            numbers.append(registry.create_version("busy").version)
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=create) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and sorted(numbers) == list(range(1, 13))


def _writer(settings: Settings, tag: str, count: int) -> None:
    registry = Registry(settings)
    for i in range(count):
        registry.append_logs("shared", 1, [f"{tag} {i}"])
        registry.create_version("race")


def test_two_processes_writing_at_once_lose_nothing(settings):
    Registry(settings).create_version("shared")
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_writer, args=(settings, tag, 40)) for tag in "ab"]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    registry = Registry(settings)
    lines = registry.read_logs("shared", 1, limit=1000)
    assert sorted(lines) == sorted(f"{tag} {i}" for tag in "ab" for i in range(40))
    for tag in "ab":  # each writer's lines keep their order
        mine = [line for line in lines if line.startswith(tag)]
        assert mine == [f"{tag} {i}" for i in range(40)]
    assert [v.version for v in registry.list_versions("race")] == list(range(1, 81))


def test_a_recreated_model_never_reuses_a_model_id(registry, tmp_path):
    """Version numbers start again at 1 after a delete; the model id (what replicas cache)
    carries the artifacts' content digest, so it names the new weights, not the old."""
    registry.create_version("again")
    first = registry.publish_version("again", 1, artifacts(tmp_path))
    _, first_dir = registry.fetch_version("again", 1)
    registry.delete_model("again")
    registry.create_version("again")
    (tmp_path / "out" / "model.weights.h5").write_text("other weights")
    second = registry.publish_version("again", 1, artifacts(tmp_path, files=("config.json",)))
    assert second.version == first.version == 1
    assert first.digest and second.digest and second.model_id != first.model_id
    assert second.model_id.startswith("again:1@")
    _, second_dir = registry.fetch_version("again", 1)
    assert second_dir != first_dir  # content-addressed: the old path is not reused either
    with open(os.path.join(second_dir, "model.weights.h5")) as f:
        assert f.read() == "other weights"


def test_a_finished_run_overrides_a_failed_guess_but_not_a_cancel(registry, tmp_path):
    registry.create_version("m")
    registry.update_version("m", 1, status="failed")  # e.g. the job server looked gone
    assert registry.publish_version("m", 1, artifacts(tmp_path)).status == "ready"
    registry.create_version("m")
    registry.update_version("m", 2, status="cancelled")
    with pytest.raises(Conflict, match="cancelled"):
        registry.publish_version("m", 2, artifacts(tmp_path))


def test_the_alias_moves_only_from_the_version_it_was_compared_with(registry, tmp_path):
    for _ in range(3):
        registry.create_version("m")
    for version in (1, 2, 3):
        registry.publish_version("m", version, artifacts(tmp_path))
    assert registry.move_alias("m", "production", 1, expected=None)
    assert not registry.move_alias("m", "production", 2, expected=None)  # already set
    results = {}

    def move(version):  # two versions that both beat version 1 finish together
        results[version] = registry.move_alias("m", "production", version, expected=1)

    racers = [threading.Thread(target=move, args=(v,)) for v in (2, 3)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert sorted(results.values()) == [False, True]
    winner = next(v for v, moved in results.items() if moved)
    assert registry.get_alias("m", "production") == winner


def test_model_pages_summarise_each_model_and_active_versions_come_in_one_list(registry, tmp_path):
    for name in ("cherry", "apple", "banana"):
        registry.create_version(name)
    registry.publish_version("apple", 1, artifacts(tmp_path), metrics={"val_loss": 2.0})
    registry.create_version("apple")
    registry.publish_version("apple", 2, artifacts(tmp_path), metrics={"val_loss": 1.5})
    registry.create_version("apple")  # v3: queued, the latest
    registry.set_alias("apple", "production", 1)
    registry.update_version("banana", 1, status="failed")

    first = registry.list_models(limit=2)
    assert [m["name"] for m in first] == ["apple", "banana"]
    apple = first[0]
    # The latest version's status, and the metrics of what is served (production, v1).
    assert (apple["latest_version"], apple["status"], apple["production_version"]) == (3, "queued", 1)
    assert apple["metrics"] == {"val_loss": 2.0}
    assert first[1]["status"] == "failed" and first[1]["metrics"] == {}
    assert [m["name"] for m in registry.list_models(limit=2, after="banana")] == ["cherry"]
    assert registry.list_models(limit=2, after="cherry") == []

    active = registry.versions_with_status(("queued", "training"))
    assert [(r.name, r.version) for r in active] == [("apple", 3), ("cherry", 1)]
    assert registry.count_versions() == {("charrnn", "ready"): 2, ("charrnn", "queued"): 2,
                                         ("charrnn", "failed"): 1}


def test_a_models_versions_come_in_pages_of_one_query_each(registry, tmp_path):
    for _ in range(5):
        registry.create_version("m")
    registry.publish_version("m", 2, artifacts(tmp_path), metrics={"val_loss": 1.0})
    registry.set_alias("m", "production", 2)
    registry.set_alias("m", "canary", 2)
    statements = []
    sa.event.listen(registry.engine, "before_cursor_execute",
                    lambda *args: statements.append(args[2]))
    pages, after = [], 0
    while True:
        page = registry.get_model("m", limit=2, after=after)
        pages.append([v["version"] for v in page["versions"]])
        if len(page["versions"]) < 2:
            break
        after = page["versions"][-1]["version"]
    assert pages == [[1, 2], [3, 4], [5]]
    assert len(statements) == len(pages)  # one query a page
    # Each page carries the model: its summary (as in list_models) and all its aliases.
    assert page["aliases"] == {"production": 2, "canary": 2}
    assert (page["latest_version"], page["status"], page["production_version"],
            page["metrics"]) == (5, "queued", 2, {"val_loss": 1.0})
    assert registry.get_model("m", limit=2, after=5)["versions"] == []  # past the last
    whole = registry.get_model("m")
    assert [v["version"] for v in whole["versions"]] == [1, 2, 3, 4, 5]
    assert whole["versions"][1]["status"] == "ready" and whole["name"] == "m"
    assert registry.get_model("m")["versions"][0]["params"] == {}
    with pytest.raises(NotFound):
        registry.get_model("nothing", limit=2)


def test_the_newest_ready_versions_with_their_production_version_in_one_query(registry, tmp_path):
    for name, kind in (("a", "charrnn"), ("b", "charrnn"), ("c", "lstm-classifier")):
        for version in (1, 2, 3):
            registry.create_version(name, kind=kind)
            if (name, version) != ("b", 3):  # b:3 stays queued
                registry.publish_version(name, version, artifacts(tmp_path))
    registry.set_alias("a", "production", 1)
    statements = []
    sa.event.listen(registry.engine, "before_cursor_execute",
                    lambda *args: statements.append(args[2]))
    page = registry.ready_versions(3, kind="charrnn")
    assert [(r.name, r.version, production) for r, production in page] == [
        ("b", 2, None), ("b", 1, None), ("a", 3, 1)]
    assert [r.version for r, _ in registry.ready_versions(2, name="c")] == [3, 2]
    assert len(registry.ready_versions(100, kind="charrnn")) == 5
    assert len(statements) == 3
    newest = registry.get_model("a", limit=2, newest_first=True)
    assert [v["version"] for v in newest["versions"]] == [3, 2]
    assert newest["production_version"] == 1
