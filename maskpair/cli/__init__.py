"""The command line: one console script, `maskpair` (also `python -m maskpair`), a subcommand per job; each
subcommand's `--help` says its defaults."""
from __future__ import annotations

import argparse
import sys

from maskpair.cli import audit, data, label_issues, notebooks, predict, train

COMMAND_MODULES = (data, audit, notebooks, train, label_issues, predict)  # each adds its subcommands, in --help's order


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's formatter that appends "(default: ...)", except where the help already says its default or the
    default is None (an option that is off, or whose help says what happens without it)."""

    def _get_help_string(self, action):
        if action.default is None or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An argument parser whose help says every option's default (subcommands' parsers are of this class too)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="maskpair", description="Paired, audited, reviewed 2D segmentation data for a Keras UNet.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_commands(commands)
    return parser


def main(argv=None) -> int:
    """Run one subcommand; its exit status."""
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
