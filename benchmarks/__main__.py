"""`python -m benchmarks [--only NAME] [--quick]`: run the benchmarks, print their tables.

Every benchmark prints a Markdown table (readable as plain text too) and writes its
numbers to `benchmarks/results/<name>.json`, with the machine they were taken on.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

from benchmarks import baselines, coordination, learning, overhead, pacing, reading
from benchmarks._common import Report, machine, write_json

BENCHMARKS: dict[str, Callable[[bool], Report]] = {
    "pacing": pacing.run,
    "learning": learning.run,
    "baselines": baselines.run,
    "coordination": coordination.run,
    "overhead": overhead.run,
    "reading": reading.run,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen benchmarks one after another; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--only",
        action="append",
        choices=list(BENCHMARKS),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a quick look")
    args = parser.parse_args(argv)
    chosen = [name for name in BENCHMARKS if not args.only or name in args.only]

    host = machine()
    print("# bulk_issuer benchmarks" + (" (quick)" if args.quick else ""))
    print()
    print(
        f"Machine: {host['cpu']}, {host['cores']} cores, {host['implementation']} "
        f"{host['python']}, {host['os']}"
    )
    started = time.perf_counter()
    for name in chosen:
        print(f"\n## {name}\n", flush=True)
        began = time.perf_counter()
        report = BENCHMARKS[name](args.quick)
        seconds = time.perf_counter() - began
        print(f"{report.title}\n")
        print(report.table())
        print()
        for note in report.notes:
            print(f"- {note}")
        path = write_json(report, {"machine": host, "quick": args.quick, "seconds": seconds})
        print(f"\n({seconds:.1f} s; {path.relative_to(path.parents[2])})", flush=True)
    total = time.perf_counter() - started
    print(f"\nTotal: {total:.0f} s ({total / 60:.1f} min) for {', '.join(chosen)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
