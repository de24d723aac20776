"""Offline sampling from a registered char-RNN, without a server.

    python -m sampling --name shakespeare --prime "ROMEO:" --max_length 1000 \
        --temperature 0.8 --top_k 5 --seed 1 [--runner auto|compiled|numpy|tensorflow]

Runs the same runner choice and engine as the Generator deployment (`--runner auto`:
models/runner_choice.py), so a seed gives the same text offline and over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from models.artifacts import load_charrnn
from models.config import SampleConfig
from models.flags import add_config_flags, config_from_flags
from models.runner_choice import RUNNER_SETTINGS, build_runner
from registry import NotFound, Registry, Settings
from sampling.engine import SamplingEngine


async def _generate(directory: str, sample: SampleConfig, runner: str) -> str:
    model, config, vocab = load_charrnn(directory)
    engine = SamplingEngine(build_runner(model, config, runner), vocab, max_batch=1)
    loop = asyncio.create_task(engine.run())
    try:
        return await engine.submit(sample).result()
    finally:
        engine.close()
        await loop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sampling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="model name in the registry")
    parser.add_argument("--version", type=int, default=None, help="default: production")
    parser.add_argument("--runner", choices=RUNNER_SETTINGS, default="auto",
                        help="step runner (auto: TensorFlow on a GPU, else compiled)")
    Settings.add_flags(parser)
    add_config_flags(parser, SampleConfig)
    args = parser.parse_args(argv)
    try:
        sample = config_from_flags(SampleConfig, args)
        registry = Registry(Settings.from_flags(args))
        record, directory = registry.fetch_version(args.name, args.version)
    except (ValueError, NotFound) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if record.kind != "charrnn":
        print(f"error: {args.name} is a {record.kind} model, not a char-RNN", file=sys.stderr)
        return 2
    print(sample.prime + asyncio.run(_generate(directory, sample, args.runner)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
