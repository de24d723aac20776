"""The command line every trainer shares: `python -m trainers.<family> --input_file ... --name ...`
plus one flag per field of the family's model and run configs."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable

from models.flags import add_config_flags, config_from_flags
from registry import Settings
from trainers.job import TrainFunction, run_job

# (args, model config, run config, settings) -> the family's TrainFunction
MakeTrain = Callable[[argparse.Namespace, object, object, Settings], TrainFunction]


def family_main(argv: list[str] | None, *, kind: str, doc: str, model_cls: type, run_cls: type,
                make_train: MakeTrain, score: str, higher_is_better: bool,
                skip: tuple[str, ...] = (), extra_flags: Callable | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m trainers.{kind.replace('-', '_')}",
                                     description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input_file", required=True,
                        help="training data: a local path or a path inside the storage")
    parser.add_argument("--name", required=True, help="model name in the registry")
    parser.add_argument("--version", type=int, default=None,
                        help="attach to this queued version (the server passes it)")
    Settings.add_flags(parser)
    if extra_flags:
        extra_flags(parser)
    add_config_flags(parser, model_cls, skip=skip)
    add_config_flags(parser, run_cls)
    args = parser.parse_args(argv)
    try:
        model_config = config_from_flags(model_cls, args)
        run_config = config_from_flags(run_cls, args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    settings = Settings.from_flags(args)
    params = {**dataclasses.asdict(model_config), **dataclasses.asdict(run_config),
              "input_file": args.input_file}
    for name in skip:
        params.pop(name, None)
    return run_job(settings, args.name, kind, params, args.version,
                   make_train(args, model_config, run_config, settings), score, higher_is_better)
