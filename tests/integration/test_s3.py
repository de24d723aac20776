"""Train, register and sample with every artifact on S3 (moto's S3 server on loopback stands in
for AWS): the upload, Ray Train's checkpoints and the version's files all live in the bucket."""

from __future__ import annotations

import subprocess
import sys

import boto3
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_train_register_and_sample_from_s3(ray_cluster, s3_endpoint, shakespeare, tmp_path, capsys):
    import os

    import sampling.__main__ as sample
    from registry import Registry, Settings

    storage, db_url = "s3://models/e2e", f"sqlite:///{tmp_path}/s3-registry.db"
    settings = Settings.from_env(storage=storage, db_url=db_url, s3_endpoint=s3_endpoint)
    registry = Registry(settings)
    registry.artifacts.put_bytes("corpora/play.txt", shakespeare[:30_000].encode())

    env = {**ray_cluster["env"], "RAY_ADDRESS": ray_cluster["address"],
           "RNNSERVE_S3_ENDPOINT": s3_endpoint,
           **{k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                         "AWS_DEFAULT_REGION")}}
    result = subprocess.run(
        [sys.executable, "-m", "trainers.charrnn", "--input_file", "corpora/play.txt",
         "--name", "clouded", "--storage", storage, "--db_url", db_url, "--max_steps", "20",
         "--save_every_n", "10", "--lstm_size", "32", "--num_seqs", "16", "--num_steps", "32",
         "--num_workers", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]

    record = registry.get_version("clouded", 1)
    path = f"e2e/models/clouded/v1-{record.digest[:16]}"
    assert record.status == "ready" and record.artifact_uri == f"s3://models/{path}"
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_endpoint)
            .list_objects_v2(Bucket="models", Prefix="e2e/")["Contents"]]
    assert f"{path}/model.weights.h5" in keys
    assert any(k.startswith("e2e/runs/clouded/v1-") for k in keys), "no Ray Train checkpoint"

    os.environ["RNNSERVE_S3_ENDPOINT"] = s3_endpoint
    try:
        assert sample.main(["--name", "clouded", "--storage", storage, "--db_url", db_url,
                            "--prime", "KING", "--max_length", "25", "--seed", "1"]) == 0
    finally:
        del os.environ["RNNSERVE_S3_ENDPOINT"]
    out = capsys.readouterr().out
    assert len(out[out.index("KING"):-1]) == 4 + 25
