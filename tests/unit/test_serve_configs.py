"""serve_config.yaml and its GPU variant pass Ray Serve's own config schema (no Ray needed)."""

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from deployments.app import AppArgs
from deployments.limits import Limits
from models.config import parse_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["serve_config.yaml", "serve_config.gpu.yaml"])
def test_serve_config_is_valid(name):
    config = ServeDeploySchema.model_validate(yaml.safe_load((REPO / name).read_text()))
    app = config.applications[0]
    assert app.import_path == "deployments.app:build_app"
    args = AppArgs.model_validate(app.args)  # what Serve does before calling build_app
    parse_config(Limits, args.limits)  # every limit name is one the app knows, in range
    deployments = {d.name: d for d in app.deployments}
    assert set(deployments) == {"Ingress", "Generator", "Classifier"}
    generator = deployments["Generator"]
    assert generator.autoscaling_config["min_replicas"] >= 1
    gpus = generator.ray_actor_options.num_gpus or 0
    assert (gpus > 0) == name.endswith("gpu.yaml")


@pytest.mark.parametrize("name", ["serve_config.yaml", "serve_config.gpu.yaml"])
def test_a_generator_replica_is_sent_enough_requests_to_fill_its_batch(name):
    app = ServeDeploySchema.model_validate(yaml.safe_load((REPO / name).read_text())).applications[0]
    args = AppArgs.model_validate(app.args)
    generator = next(d for d in app.deployments if d.name == "Generator")
    assert generator.max_ongoing_requests >= args.max_batch
    assert generator.autoscaling_config["target_ongoing_requests"] <= args.max_batch
