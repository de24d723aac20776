"""Artifact storage on a local path and on S3 (moto's S3 server on loopback stands in for AWS:
this machine has no cloud access)."""

from __future__ import annotations

import pytest

from registry import ArtifactStore


def test_streamed_write_is_capped_and_leaves_no_partial_file(tmp_path):
    store = ArtifactStore(str(tmp_path))
    assert store.write_stream("uploads/a/ok.txt", [b"ab", b"cd"], max_bytes=4) == 4
    with pytest.raises(ValueError, match="larger than 4 bytes"):
        store.write_stream("uploads/a/big.txt", [b"abc", b"de"], max_bytes=4)
    assert store.get_bytes("uploads/a/ok.txt") == b"abcd"
    assert not store.exists("uploads/a/big.txt")


def test_paths_cannot_escape_the_root(tmp_path):
    with pytest.raises(ValueError):
        ArtifactStore(str(tmp_path)).put_bytes("../outside.txt", b"x")


def test_upload_dir_replaces_a_version_directory_whole(tmp_path):
    store = ArtifactStore(str(tmp_path / "root"))
    source = tmp_path / "src"
    source.mkdir()
    (source / "weights.h5").write_bytes(b"w1")
    store.upload_dir(str(source), "models/m/v1")
    (source / "weights.h5").write_bytes(b"w2")
    store.upload_dir(str(source), "models/m/v1")
    assert store.get_bytes("models/m/v1/weights.h5") == b"w2"
    assert [p.name for p in (tmp_path / "root" / "models" / "m").iterdir()] == ["v1"]


def test_s3_round_trip(s3_endpoint, tmp_path):
    store = ArtifactStore("s3://models/rnnserve", s3_endpoint=s3_endpoint)
    store.put_bytes("uploads/m/a.txt", "héllo".encode())
    assert store.get_bytes("uploads/m/a.txt").decode() == "héllo"
    source = tmp_path / "v1"
    source.mkdir()
    (source / "config.json").write_text("{}")
    store.upload_dir(str(source), "models/m/v1")
    store.download_dir("models/m/v1", str(tmp_path / "back"))
    assert (tmp_path / "back" / "config.json").read_text() == "{}"
    store.delete("models/m")
    assert not store.exists("models/m/v1/config.json")
