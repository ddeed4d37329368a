"""Command line: `python -m batchscale <command> ...` (or `batchscale <command>`); every Snakemake rule calls one.

Commands are declared by stage, each with its arguments, in cli.training, cli.analysis and cli.reporting.
A command imports its stage's modules only when it runs (deferred imports, by design here alone): a train
job then never pays for pandas, matplotlib or xarray, nor a figure job for torch's engine.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from typing import Callable

from batchscale.errors import BatchscaleError


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, a line of help, what it runs and its arguments ((flags, add_argument options))."""

    name: str
    help: str
    handler: Callable
    arguments: tuple = ()
    parser_options: dict = field(default_factory=dict)


def arg(*flags, **options) -> tuple:
    return flags, options


def build_parser() -> argparse.ArgumentParser:
    from batchscale.cli import analysis, prediction, reporting, training

    parser = argparse.ArgumentParser(prog="batchscale", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in training.COMMANDS + analysis.COMMANDS + reporting.COMMANDS + prediction.COMMANDS:
        child = sub.add_parser(command.name, help=command.help, **command.parser_options)
        for flags, options in command.arguments:
            if flags == ("--one-of",):
                group = child.add_mutually_exclusive_group(required=True)
                for inner_flags, inner_options in options["choices"]:
                    group.add_argument(*inner_flags, **inner_options)
            else:
                child.add_argument(*flags, **options)
        child.set_defaults(handler=command.handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    # A study's own `package.module:callable` is found from the working directory, whichever way the command
    # was started (`python -m batchscale` puts it on the path, the `batchscale` script does not).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except BatchscaleError as err:
        print(f"batchscale: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a file that cannot be read or written: one line, not a traceback
        print(f"batchscale: error: {err.filename or ''}: {err.strerror or err}", file=sys.stderr)
        return 2
    return 0
