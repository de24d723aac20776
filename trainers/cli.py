"""The command line every trainer shares: `python -m trainers.<family> --input_file ... --name ...`
plus one flag per field of the family's model and run configs."""

from __future__ import annotations

import argparse
import sys

from models.flags import add_config_flags
from registry import Settings
from trainers.bookkeeping import run_job
from trainers.families import FAMILIES


def main(kind: str, argv: list[str] | None = None) -> int:
    family = FAMILIES[kind]
    module = sys.modules[family.module]
    parser = argparse.ArgumentParser(prog=f"python -m {family.module}", description=module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input_file", required=True,
                        help="training data: a local path or a path inside the storage")
    for flag, help_text in family.extra_inputs:
        parser.add_argument(f"--{flag}", default=None, help=help_text)
    parser.add_argument("--name", required=True, help="model name in the registry")
    parser.add_argument("--version", type=int, default=None,
                        help="attach to this queued version (the server passes it)")
    Settings.add_flags(parser)
    add_config_flags(parser, family.model_config, skip=family.server_managed)
    add_config_flags(parser, family.run_config)
    args = parser.parse_args(argv)
    given = {name: value for name, value in vars(args).items()
             if name in family.flag_names() and value is not None}
    try:
        params = family.parse_params(given)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    inputs = {key: getattr(args, key) for key in ("input_file", *dict(family.extra_inputs))
              if getattr(args, key)}
    return run_job(family, Settings.from_flags(args), args.name, inputs, params, args.version)
