"""``python -m cancelpool demo``: show what cancelpool does, live."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen command."""
    parser = argparse.ArgumentParser(
        prog="python -m cancelpool",
        description="cancelpool: a ThreadPoolExecutor whose futures stop running tasks.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="a short live demonstration, with timings")
    parser.parse_args(argv)
    from ._demo import main as demo

    return demo(sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
