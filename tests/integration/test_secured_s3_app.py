"""A second Serve app, deployed beside the main one, configured as a cluster would run it:
storage on S3 (moto's S3 server on loopback stands in for AWS, which this machine cannot
reach) and RNNSERVE_API_KEY set. Through its HTTP API: writes need the key, reads stay open,
and a model uploaded, trained, registered and served lives entirely in the bucket.

One app covers both settings to keep the suite to one extra set of replicas."""

from __future__ import annotations

import copy
import json

import boto3
import pytest
import requests
import yaml

from tests.conftest import S3_CREDENTIALS, deploy_app
from tests.integration.api import generate, recreate_and_generate, upload, wait_status

pytestmark = pytest.mark.integration

KEY = "s3cret-key-for-tests"
PREFIX = "/secured"


DB_PASSWORD = "db-password-never-in-job-lists"


@pytest.fixture(scope="module")
def secured(serve_app, ray_cluster, s3_endpoint, db_servers, tmp_path_factory):
    """Deploys the session's config plus the `secured` app; on exit, the session's config
    alone again (`serve deploy` is declarative: an app left out of the config is removed)."""
    session_config = ray_cluster["serve_config"]
    config = yaml.safe_load(session_config.read_text())
    app = copy.deepcopy(config["applications"][0])
    app.update(name="secured", route_prefix=PREFIX)
    # PostgreSQL with a password in the URL (this test server trusts any: the point is where
    # the password goes, not whether it is checked).
    db_url = db_servers("postgresql").new_database().replace("postgres@", f"postgres:{DB_PASSWORD}@")
    app["args"].update(storage="s3://models/secured", s3_endpoint=s3_endpoint, db_url=db_url)
    # Replicas get the key; S3 credentials come from the nodes' environment (the session
    # cluster's, as cluster.yaml gives each node its own).
    app["runtime_env"] = {"env_vars": {"RNNSERVE_API_KEY": KEY}}
    for deployment in app["deployments"]:  # one small replica each on this 2-core machine
        deployment.pop("autoscaling_config", None)
        deployment.update(num_replicas=1, ray_actor_options={"num_cpus": 0.1})
    config["applications"].append(app)
    path = tmp_path_factory.mktemp("secured-config") / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    url = serve_app + PREFIX
    deploy_app(ray_cluster, path, url)
    yield url
    deploy_app(ray_cluster, session_config, serve_app)


def bucket_keys(endpoint: str) -> list[str]:
    listing = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(
        Bucket="models", Prefix="secured/")
    return [o["Key"] for o in listing.get("Contents", [])]


def test_the_app_says_whether_writes_need_a_key(secured, serve_app):
    assert requests.get(f"{secured}/healthz", timeout=10).json()["writes_need_key"] is True
    assert requests.get(f"{serve_app}/healthz", timeout=10).json()["writes_need_key"] is False
    assert requests.get(f"{secured}/healthz", timeout=10).json()["inference_needs_key"] is False


def test_writes_need_the_key_and_refusals_leave_nothing(secured, s3_endpoint, shakespeare):
    text = shakespeare[:30_000]
    for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        response = upload(secured, "guarded", text, headers=headers)
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"
        assert "RNNSERVE_API_KEY" in response.json()["error"]
    assert requests.get(f"{secured}/models", timeout=10).json()["models"] == []
    assert bucket_keys(s3_endpoint) == []

    for method, path, body in (("post", "/models/guarded/promote", {"version": 1}),
                               ("post", "/models/guarded/versions/1/cancel", None),
                               ("delete", "/models/guarded", None)):
        response = requests.request(method, f"{secured}{path}", json=body, timeout=10)
        assert response.status_code == 401, (path, response.text)


def test_train_register_and_serve_from_s3_with_the_key(secured, s3_endpoint, shakespeare):
    auth = {"Authorization": f"Bearer {KEY}"}
    response = upload(secured, "clouded", shakespeare[:30_000], headers=auth)
    assert response.status_code == 202, response.text
    version = response.json()["version"]
    record = wait_status(secured, "clouded", version, {"ready", "failed"})
    logs = requests.get(f"{secured}/models/clouded/versions/{version}/logs", timeout=10).json()
    assert record["status"] == "ready", logs

    keys = bucket_keys(s3_endpoint)
    assert any(k.startswith("secured/uploads/clouded/") for k in keys), keys
    assert any(k.startswith(f"secured/models/clouded/v{version}-") and k.endswith("/model.weights.h5")
               for k in keys), keys
    assert any(k.startswith(f"secured/runs/clouded/v{version}-") for k in keys), \
        "no Ray Train checkpoint in the bucket"

    # Reads and inference stay open without the key; the replica loads the model from S3.
    generated = generate(secured, "clouded", prime="KING", max_length=30, seed=5)
    assert generated.status_code == 200, generated.text
    assert len(generated.json()["generated"]) == 30

    promoted = requests.post(f"{secured}/models/clouded/promote", json={"version": version},
                             headers=auth, timeout=10)
    assert promoted.status_code == 200, promoted.text
    deleted = requests.delete(f"{secured}/models/clouded", headers=auth, timeout=30)
    assert deleted.status_code == 200, deleted.text
    assert not any(k.startswith("secured/models/clouded/") for k in bucket_keys(s3_endpoint))


def test_job_submissions_show_no_secret(secured, ray_cluster, shakespeare):
    """The dashboard's job list shows every job's entrypoint and environment to whoever can
    read it: the training job got to S3 and the database without either carrying a secret."""
    from ray.job_submission import JobSubmissionClient

    auth = {"Authorization": f"Bearer {KEY}"}
    response = upload(secured, "listed", shakespeare[:30_000], headers=auth, max_steps="20")
    assert response.status_code == 202, response.text
    assert wait_status(secured, "listed", response.json()["version"],
                       {"ready", "failed"})["status"] == "ready"
    jobs = JobSubmissionClient(ray_cluster["dashboard"]).list_jobs()
    listed = json.dumps([job.dict() for job in jobs], default=str)
    assert response.json()["job_id"] in listed
    for secret in (DB_PASSWORD, S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"], KEY):
        assert secret not in listed


def test_a_recreated_model_is_served_with_its_new_weights_from_s3(secured, shakespeare):
    """As tests/integration/test_model_lifecycle.py, with the artifacts in the bucket: the
    replica's local copy of the old weights is not what it serves after the re-creation."""
    auth = {"Authorization": f"Bearer {KEY}"}
    before, after = recreate_and_generate(secured, "phoenix-s3", shakespeare[:20_000], auth)
    assert not set(before) <= set("0123456789 "), before
    assert len(after) == 200 and set(after) <= set("0123456789 "), after
