"""serve_config.yaml and its GPU variant pass Ray Serve's own config schema (no Ray needed)."""

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from deployments.limits import Limits

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["serve_config.yaml", "serve_config.gpu.yaml"])
def test_serve_config_is_valid(name):
    config = ServeDeploySchema.model_validate(yaml.safe_load((REPO / name).read_text()))
    app = config.applications[0]
    assert app.import_path == "deployments.app:build_app"
    Limits.from_dict(app.args["limits"])  # every limit name is one the app knows
    deployments = {d.name: d for d in app.deployments}
    assert set(deployments) == {"Ingress", "Generator", "Classifier"}
    generator = deployments["Generator"]
    assert generator.autoscaling_config["min_replicas"] >= 1
    gpus = generator.ray_actor_options.num_gpus or 0
    assert (gpus > 0) == name.endswith("gpu.yaml")
