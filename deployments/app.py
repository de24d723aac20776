"""The Serve application: `build_app(args)` is what serve_config.yaml imports.

    serve run serve_config.yaml                      # from the repo root
    serve run deployments.app:build_app storage=/mnt/shared

Deployment options (replicas, autoscaling, resources) live in serve_config.yaml; `args`
carries what the code needs: storage/db settings, limits and engine sizes.
"""

from __future__ import annotations

from deployments.classifier import Classifier
from deployments.generator import Generator
from deployments.ingress import Ingress
from deployments.limits import Limits


def build_app(args: dict | None = None):
    args = dict(args or {})
    settings = {k: args[k] for k in ("storage", "db_url", "s3_endpoint") if args.get(k)}
    limits = Limits.from_dict(args.get("limits") or {})  # validated here: a typo fails the deploy
    generator = Generator.bind(
        settings=settings,
        max_models_per_replica=int(args.get("max_models_per_replica", 4)),
        max_batch=int(args.get("max_batch", 64)),
        max_waiting=int(args.get("max_waiting", 512)),
        generation_timeout_s=limits.generation_timeout_s,
    )
    classifier = Classifier.bind(
        settings=settings,
        max_models_per_replica=int(args.get("max_models_per_replica", 4)),
        max_batch_size=int(args.get("classifier_max_batch", 64)),
        batch_wait_timeout_s=float(args.get("classifier_batch_wait_s", 0.005)))
    return Ingress.bind(generator, classifier, settings=settings,
                        limits=args.get("limits") or {},
                        dashboard_address=args.get("dashboard_address"))


app = build_app
