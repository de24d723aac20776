"""serve_config.yaml as the repository ships it, and copies of it with a few settings changed:
what the proxy's body cap, the test clusters, the load tests and the benchmarks deploy. Read
here only, so none of them carries its own idea of where a setting sits in the file.
Standard library and PyYAML (a dependency of Ray's) only: Serve's proxy imports it too."""

from __future__ import annotations

from pathlib import Path

SERVE_CONFIG = Path(__file__).resolve().parents[1] / "serve_config.yaml"


def shipped_config(path: Path = SERVE_CONFIG) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def rnnserve_app(config: dict) -> dict:
    """The rnnserve application of a config (the file ships that one only)."""
    [application] = config["applications"]
    return application


def deployment(config: dict, name: str) -> dict:
    """The options of the deployment `name` (Ingress, Generator, Classifier) in `config`."""
    return next(d for d in rnnserve_app(config)["deployments"] if d["name"] == name)


def changed_config(port: int | None = None, **limits) -> dict:
    """The shipped config with the HTTP port (if given) and the app's `limits` changed."""
    config = shipped_config()
    if port is not None:
        config["http_options"]["port"] = port
    rnnserve_app(config)["args"]["limits"].update(limits)
    return config


def write_config(config: dict, path: Path) -> Path:
    """`config` written to `path` for `serve deploy`/`serve run`; returns `path`."""
    import yaml

    path = Path(path)
    path.write_text(yaml.safe_dump(config))
    return path
