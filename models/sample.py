"""Offline sampling from a registered char-RNN (the origin's sample.py, without a server).

    python -m models.sample --name shakespeare --prime "ROMEO:" --max_length 1000 \
        --temperature 0.8 --top_k 5 --seed 1

Runs the same runner and sampler as the Generator deployment, so a seed gives the same text
offline and over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from models.config import SampleConfig


async def _generate(directory: str, sample: SampleConfig) -> str:
    from deployments.engine import SamplingEngine
    from models.artifacts import load_charrnn
    from models.runner import StepRunner

    model, config, vocab = load_charrnn(directory)
    engine = SamplingEngine(StepRunner.from_model(model, config), vocab, max_batch=1)
    loop = asyncio.create_task(engine.run())
    try:
        return await engine.submit(sample).result()
    finally:
        engine.close()
        await loop


def main(argv: list[str] | None = None) -> int:
    from registry import NotFound, Registry, Settings
    from trainers.cli import add_config_flags, config_from_flags

    parser = argparse.ArgumentParser(prog="python -m models.sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="model name in the registry")
    parser.add_argument("--version", type=int, default=None, help="default: production")
    parser.add_argument("--storage", default=None, help="storage root (env RNNSERVE_STORAGE)")
    parser.add_argument("--db_url", default=None, help="registry database (env RNNSERVE_DB_URL)")
    add_config_flags(parser, SampleConfig)
    args = parser.parse_args(argv)
    try:
        sample = config_from_flags(SampleConfig, args)
        overrides = {k: v for k, v in {"storage": args.storage, "db_url": args.db_url}.items() if v}
        registry = Registry(Settings.from_env(**overrides))
        record, directory = registry.fetch_version(args.name, args.version)
    except (ValueError, NotFound) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if record.kind != "charrnn":
        print(f"error: {args.name} is a {record.kind} model, not a char-RNN", file=sys.stderr)
        return 2
    print(sample.prime + asyncio.run(_generate(directory, sample)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
