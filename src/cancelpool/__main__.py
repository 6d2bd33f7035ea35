"""``python -m cancelpool``: the command line (``demo``, ``--version``)."""

from __future__ import annotations

import argparse
import os
import platform
import sys

from ._demo import describe_steps
from ._demo import main as run_demo
from ._version import __version__


def _parser() -> tuple[argparse.ArgumentParser, list[str]]:
    """The argument parser, and the names of its commands."""
    parser = argparse.ArgumentParser(
        prog="python -m cancelpool",
        description="cancelpool: a ThreadPoolExecutor whose futures stop running tasks.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"cancelpool {__version__} "
        f"({platform.python_implementation()} {platform.python_version()})",
    )
    # Not required=True: argparse would then say "the following arguments are required:
    # command", which names no command; main() names them instead.
    sub = parser.add_subparsers(dest="command", title="commands")
    sub.add_parser(
        "demo",
        help="a short live demonstration, with timings",
        description="A live demonstration of cancelpool, with real timings, in about 2 s. "
        "Its steps:\n\n" + describe_steps(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser, list(sub.choices)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen command.

    Args:
        argv: The arguments, without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0, or 1 if standard output was closed before the end (as
        Python itself exits when it cannot flush standard output).

    Raises:
        SystemExit: For ``--help`` and ``--version`` (status 0) and usage errors (2).
    """
    parser, commands = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error(f"choose a command: {', '.join(commands)}")
    try:
        status = run_demo(sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`python -m cancelpool demo | head -1`): stop without a
        # traceback. Point stdout at devnull, so that the interpreter's last flush at
        # exit does not fail again (the recipe in the docs of the signal module).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
