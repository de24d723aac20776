"""Command-line flags generated from the config dataclasses, so each flag is defined once
(the trainers' and the offline sampler's)."""

from __future__ import annotations

import argparse
import dataclasses

from models.config import field_types, parse_config


def add_config_flags(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One `--field` flag per dataclass field; values are validated later by parse_config."""
    types = field_types(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        help_text = f.metadata.get("help", "")
        if types[f.name] is bool:
            # --use_gpu / --use_gpu true / --use_gpu=false all work, like the reference char-RNN's flags.
            parser.add_argument(f"--{f.name}", nargs="?", const="true", default=None,
                                help=f"{help_text} (default {f.default})")
        else:
            parser.add_argument(f"--{f.name}", default=None, help=f"{help_text} (default {f.default})")


def config_from_flags(cls: type, args: argparse.Namespace):
    """The dataclass built from the flags the user gave (others keep their defaults)."""
    names = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return parse_config(cls, given)

