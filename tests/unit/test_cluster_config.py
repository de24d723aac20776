"""cluster.yaml passes the Ray cluster launcher's own schema validation (no cloud needed)."""

from pathlib import Path

import yaml

from deployments.proxy_guard import CALLBACK as PROXY_CALLBACK

REPO = Path(__file__).resolve().parents[2]


def test_cluster_yaml_is_valid_for_the_ray_launcher():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    prepared = prepare_config(config)  # fills defaults, as `ray up` does first
    validate_config(prepared)  # raises on any violation of Ray's cluster schema
    types = prepared["available_node_types"]
    assert types["gpu_trainer"]["min_workers"] == 0  # GPU trainers scale from zero
    assert prepared["head_node_type"] == "head"
    setup = "\n".join(prepared["setup_commands"])
    assert "RNNSERVE_STORAGE" in setup and "RNNSERVE_DB_URL" in setup
    # Token authentication on every node; the token comes from outside the file.
    assert "export RAY_AUTH_MODE=token" in setup
    for start in (prepared["head_start_ray_commands"], prepared["worker_start_ray_commands"]):
        assert "RAY_AUTH_TOKEN" in "\n".join(start)
        assert "RNNSERVE_DB_PASSWORD" in "\n".join(start)  # from the node, not the job
        # Serve's proxy on every node refuses oversized declared bodies itself.
        assert f"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH={PROXY_CALLBACK}" in start[-1]
    assert "RAY_AUTH_TOKEN=" not in setup and "RNNSERVE_DB_PASSWORD=" not in setup


def test_the_validator_would_catch_a_broken_config():
    import pytest
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config["available_node_types"]["gpu_trainer"]["min_workers"] = "zero"
    with pytest.raises(Exception, match="zero"):
        validate_config(prepare_config(config))
