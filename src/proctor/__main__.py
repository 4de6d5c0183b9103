"""Command line: ``python -m proctor {tour,bench,info}``."""

from __future__ import annotations

import argparse
import sys

from ._context import START_METHODS, get_start_method

__all__ = ("main",)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m proctor",
        description=(
            "proctor: process-based parallelism built from OS primitives -- the "
            "multiprocessing API that never hangs, never loses data, and is fast."
        ),
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    tour = commands.add_parser(
        "tour",
        help="run the tutorial's programs with proctor and check their output",
        description="Run the tutorial's example programs with proctor, under each start "
        "method, showing their output and whether it is what the tutorial expects.",
    )
    tour.add_argument(
        "--start-method",
        choices=[*START_METHODS, "all", "default"],
        default="all",
        help="start method to run the programs under (default: all three)",
    )
    bench = commands.add_parser(
        "bench",
        help="run benchmarks/ and print proctor vs multiprocessing ratios",
        description="Run the benchmarks in benchmarks/ (proctor and multiprocessing "
        "side by side in one run) and print a table of ratios.",
    )
    bench.add_argument("--quick", action="store_true", help="fewer repetitions, smaller sizes")
    bench.add_argument(
        "--markdown", metavar="FILE", help="also write the results, dated, as a Markdown table"
    )
    bench.add_argument(
        "--plot",
        metavar="FILE",
        help="also draw the ratios (and the machine's floors) into an image, e.g. bench.png "
        "(needs matplotlib: pip install 'proctor[plot]')",
    )
    bench.add_argument(
        "--runs",
        metavar="N",
        type=_positive_int,
        default=1,
        help="run the selection N times and report each row's median, with the range of "
        "its ratio (default 1)",
    )
    bench.add_argument("names", nargs="*", help="only these benchmarks (e.g. process queue)")
    commands.add_parser(
        "info",
        help="show the start methods, platform details and whether the C accelerator is active",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "tour":
        from ._cli._tour import tour

        if args.start_method == "all":
            methods = list(START_METHODS)
        elif args.start_method == "default":
            default = get_start_method()
            if default is None:  # never: without allow_none it fixes the default
                raise RuntimeError("no default start method")
            methods = [default]
        else:
            methods = [args.start_method]
        return tour(methods)
    if args.command == "bench":
        from ._cli._bench import run_benchmarks

        return run_benchmarks(
            args.names, quick=args.quick, markdown=args.markdown, plot=args.plot, runs=args.runs
        )
    if args.command == "info":
        from . import __version__, get_all_start_methods
        from ._core._system import describe_fork_list
        from ._queues._accel import describe as describe_queues
        from ._start._bootstrap import describe_parent_death
        from ._sync._accel import describe

        print(f"proctor {__version__} on Python {sys.version.split()[0]} ({sys.platform})")
        print(f"start methods: {', '.join(get_all_start_methods())} (default {get_start_method()})")
        print(f"child's parent-death signal: {describe_parent_death()}")
        # (_core._native: also a connection's looks before a sleep and its receives into bytes)
        print(f"fork children's descriptors, connection receives: {describe_fork_list()}")
        # (the locks' line last: test_sync_accel reads it there)
        print(f"queue fast paths: {describe_queues()}")
        print(f"lock and semaphore fast paths: {describe()}")
        return 0
    _parser().print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
