"""Reading: stream and validate 10^4 to 10^6 CSV rows; rows per second and peak memory.

The files follow Navigatr's bulk-issue template (First Name, Last Name, Email,
Organisation), every row valid, written once into a temporary directory. Each size is
read in a fresh child process, so that one peak does not hide another; the peak is the
child's own maximum resident set size, which the parent gets from `wait4`. Measured:
iterating `open_source`; `scan_source`, the whole-file check made before anything is
sent (issue 10: 10^6 rows in about 8 s); the command line's dry run (`bulk-issuer issue
FILE --badge 51 --dry-run --offline`); and a 100,000-row .xlsx, read raw by python-calamine and by
openpyxl (read-only mode) to choose the workbook reader, and through `open_source`.
Nothing here runs beside anything else: it is all CPU-bound. Memory is in MiB.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import BADGE, Report

__all__ = ["run"]

SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (10_000, 100_000)
#: Rows of the workbook that the two readers are compared on.
WORKBOOK_ROWS = 100_000
QUICK_WORKBOOK_ROWS = 10_000
#: The target for scanning the largest file, in seconds (issue 10's figure).
SCAN_TARGET_S = 8.0
#: The target for the largest dry run, in MiB.
DRY_RUN_TARGET_MB = 150
#: Time allowed per row before a child is killed: ten times the slowest seen here.
_SECONDS_PER_ROW = 1e-3
_POLL = 0.05
_WOULD_ISSUE = re.compile(r"would issue\s+(\d+)")
_ORGS = ("Northwind College", "Contoso Academy", "Fabrikam Institute", "Tailspin School")

# Run with `python -c`, not as a module of this package, so the child imports only what a
# user reading a file imports (bulk_issuer), not the benchmarks and the sandbox as well.
_CHILD = """
import json, resource, sys, time
from bulk_issuer.readers import ReadOptions, open_source
imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
rows = valid = 0
with open_source(sys.argv[1], ReadOptions(badge_id=int(sys.argv[2]))) as source:
    for row in source:
        rows += 1
        valid += row.ok
seconds = time.perf_counter() - started
print(json.dumps({"rows": rows, "valid": valid, "seconds": seconds, "import_kib": imported}))
"""
_SCAN_CHILD = """
import json, resource, sys, time
from bulk_issuer.readers import ReadOptions, scan_source
imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
scan = scan_source(sys.argv[1], ReadOptions(badge_id=int(sys.argv[2])))
seconds = time.perf_counter() - started
print(json.dumps({"rows": scan.rows, "valid": scan.learners, "seconds": seconds,
                  "import_kib": imported}))
"""
# The raw cells of the first sheet, as each candidate library reads them: no validation.
_WORKBOOK_CHILD = """
import json, resource, sys, time
kind, path = sys.argv[1], sys.argv[2]
if kind == "python-calamine":
    import python_calamine
else:
    import openpyxl
imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
rows = 0
if kind == "python-calamine":
    book = python_calamine.CalamineWorkbook.from_path(path)
    for cells in book.get_sheet_by_index(0).iter_rows():
        rows += 1
else:
    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    for cells in book.worksheets[0].iter_rows(values_only=True):
        rows += 1
    book.close()
seconds = time.perf_counter() - started
print(json.dumps({"rows": rows - 1, "valid": rows - 1, "seconds": seconds,
                  "import_kib": imported}))
"""


def _write_xlsx(path: Path, size: int) -> None:
    """The same learners as `_write_csv`, plus an issue date cell, as an Excel workbook."""
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("Learners")
    sheet.append(["First Name", "Last Name", "Email", "Organisation", "Issue Date"])
    day = datetime.date(2025, 3, 1)
    for i in range(size):
        org = _ORGS[i % len(_ORGS)]
        sheet.append([f"Learner{i}", f"Tester{i % 977}", f"learner{i}@example.com", org, day])
    book.save(path)


def _write_csv(path: Path, size: int) -> None:
    """A Navigatr-template CSV of `size` distinct, valid learners."""
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("First Name,Last Name,Email,Organisation\r\n")
        for i in range(size):
            out.write(
                f"Learner{i},Tester{i % 977},learner{i}@example.com,{_ORGS[i % len(_ORGS)]}\r\n"
            )


@dataclass(frozen=True, slots=True)
class _Child:
    """A finished child process: exit status, wall time, peak RSS (MiB) and its output."""

    status: int
    wall: float
    peak_mb: float
    output: str


def _run_child(
    command: list[str], *, cwd: Path, out: Path, timeout: float, env: dict[str, str]
) -> _Child:
    """Run `command` with its output in `out`; its own peak RSS, from `wait4`."""
    started = time.perf_counter()
    with out.open("wb") as sink:
        process = subprocess.Popen(command, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT, env=env)
    # Polled rather than a blocking wait, so that a stuck child cannot hang the benchmark.
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            process.kill()
            pid, status, usage = os.wait4(process.pid, 0)
            break
        time.sleep(_POLL)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    output = out.read_text(encoding="utf-8", errors="replace")
    # ru_maxrss is in KiB on Linux.
    return _Child(process.returncode, wall, usage.ru_maxrss / 1024, output)


def _environment() -> dict[str, str]:
    # No credentials and no base URL: a dry run needs neither, and must not find any.
    return {k: v for k, v in os.environ.items() if not k.startswith("NAVIGATR_")}


def _read(path: Path, work: Path, size: int, script: str = _CHILD, *args: str) -> dict[str, Any]:
    """Open and iterate every row of `path` in a fresh interpreter (or run `script`)."""
    arguments = list(args) if args else [str(path), str(BADGE)]
    child = _run_child(
        [sys.executable, "-c", script, *arguments],
        cwd=work,
        out=work / f"read-{size}-{len(script)}-{args[0] if args else ''}.out",
        timeout=30 + size * _SECONDS_PER_ROW,
        env=_environment(),
    )
    if child.status != 0:
        raise RuntimeError(f"reading {size} rows failed ({child.status}): {child.output[-2000:]}")
    found = json.loads(child.output.strip().splitlines()[-1])
    return {
        "rows": found["rows"],
        "valid": found["valid"],
        "seconds": found["seconds"],
        "rows_per_second": found["rows"] / found["seconds"],
        "import_mb": found["import_kib"] / 1024,
        "peak_mb": child.peak_mb,
        "wall": child.wall,
    }


def _dry_run(path: Path, work: Path, size: int) -> dict[str, Any]:
    """`bulk-issuer issue FILE --badge 51 --dry-run --offline` in a fresh process (the
    reading, validation and counting a dry run does, without an API to check against)."""
    script = Path(sys.executable).with_name("bulk-issuer")
    program = [str(script)] if script.exists() else [sys.executable, "-m", "bulk_issuer"]
    child = _run_child(
        [*program, "issue", str(path), "--badge", str(BADGE), "--dry-run", "--offline"],
        cwd=work,  # the journal it opens lands beside FILE, in the temporary directory
        out=work / f"dry-run-{size}.out",
        timeout=60 + 2 * size * _SECONDS_PER_ROW,
        env=_environment(),
    )
    found = _WOULD_ISSUE.search(child.output)
    return {
        "rows": size,
        "status": child.status,
        "would_issue": int(found.group(1)) if found else None,
        "invalid_lines": sum(1 for line in child.output.splitlines() if ": invalid:" in line),
        "seconds": child.wall,
        "rows_per_second": size / child.wall if child.wall > 0 else 0.0,
        "peak_mb": child.peak_mb,
        "output": child.output[-1500:],
    }


def _growth(found: dict[str, Any]) -> float:
    """Peak memory less what importing took, in MiB."""
    return float(found["peak_mb"] - found["import_mb"])


def run(quick: bool) -> Report:
    """Run the reading benchmark: 10^4, 10^5, 10^6 rows (`quick`: 10^4 and 10^5)."""
    sizes = QUICK_SIZES if quick else SIZES
    rows: list[list[str]] = []
    reads: list[dict[str, Any]] = []
    scans: list[dict[str, Any]] = []
    workbooks: list[dict[str, Any]] = []
    dry_runs: list[dict[str, Any]] = []
    book_rows = QUICK_WORKBOOK_ROWS if quick else WORKBOOK_ROWS
    with tempfile.TemporaryDirectory(prefix="bulk-issuer-bench-") as tmp:
        work = Path(tmp)
        files = {}
        for size in sizes:
            files[size] = work / f"cohort-{size}.csv"
            _write_csv(files[size], size)
        for size in sizes:
            reads.append(_read(files[size], work, size))
        for size in sizes:
            scans.append(_read(files[size], work, size, _SCAN_CHILD))
        book = work / f"cohort-{book_rows}.xlsx"
        _write_xlsx(book, book_rows)
        for library in ("python-calamine", "openpyxl"):
            found = _read(book, work, book_rows, _WORKBOOK_CHILD, library, str(book))
            workbooks.append({"what": f".xlsx raw cells: {library}", **found})
        found = _read(book, work, book_rows)
        workbooks.append({"what": ".xlsx open_source + iterate", **found})
        # The dry run at both ends: its memory should not grow with the file either.
        for size in (sizes[0], sizes[-1]):
            dry_runs.append(_dry_run(files[size], work, size))
    for r in reads:
        rows.append(
            [
                "open_source + iterate",
                f"{r['rows']:,}",
                f"{r['valid']:,}",
                f"{r['seconds']:.1f} s",
                f"{r['rows_per_second']:,.0f}",
                f"{r['peak_mb']:.0f} MB",
                f"{r['peak_mb'] - r['import_mb']:.0f} MB",
            ]
        )
    for r in scans:
        rows.append(
            [
                "scan_source (before sending)",
                f"{r['rows']:,}",
                f"{r['valid']:,}",
                f"{r['seconds']:.1f} s",
                f"{r['rows_per_second']:,.0f}",
                f"{r['peak_mb']:.0f} MB",
                f"{r['peak_mb'] - r['import_mb']:.0f} MB",
            ]
        )
    for r in workbooks:
        rows.append(
            [
                r["what"],
                f"{r['rows']:,}",
                f"{r['valid']:,}",
                f"{r['seconds']:.1f} s",
                f"{r['rows_per_second']:,.0f}",
                f"{r['peak_mb']:.0f} MB",
                f"{r['peak_mb'] - r['import_mb']:.0f} MB",
            ]
        )
    for d in dry_runs:
        rows.append(
            [
                "CLI issue --dry-run --offline",
                f"{d['rows']:,}",
                f"{d['would_issue']:,}" if d["would_issue"] is not None else "?",
                f"{d['seconds']:.1f} s",
                f"{d['rows_per_second']:,.0f}",
                f"{d['peak_mb']:.0f} MB",
                "-",
            ]
        )
    largest = dry_runs[-1]
    problems = [
        f"dry run of {d['rows']:,} rows: exit {d['status']}, would issue {d['would_issue']}, "
        f"{d['invalid_lines']} invalid lines; output ends: {d['output'][-300:]!r}"
        for d in dry_runs
        if d["status"] != 0 or d["would_issue"] != d["rows"] or d["invalid_lines"]
    ]
    problems += [
        f"only {r['valid']:,} of {r['rows']:,} rows valid" for r in reads if r["valid"] != r["rows"]
    ]
    problems += [
        f"scan of {r['rows']:,} rows found {r['valid']:,} learners"
        for r in scans
        if r["valid"] != r["rows"]
    ]
    spread = max(r["peak_mb"] for r in reads) - min(r["peak_mb"] for r in reads)
    biggest_scan = scans[-1]
    calamine, openpyxl = workbooks[0], workbooks[1]
    first, last = reads[0], reads[-1]
    per_row = (last["peak_mb"] - first["peak_mb"]) * 2**20 / (last["rows"] - first["rows"])
    notes = [
        "Navigatr-template CSV (First Name, Last Name, Email, Organisation), all rows valid; "
        "each line is a fresh process. valid = rows that passed validation (dry run: "
        "'would issue'). peak = the child's max RSS from wait4, in MiB; growth = peak less "
        "the RSS right after importing bulk_issuer. Dry run time includes interpreter start.",
        f"memory across reader sizes: peaks within {spread:.0f} MB of each other from "
        f"{sizes[0]:,} to {sizes[-1]:,} rows, about {per_row:.0f} bytes per extra row "
        "(the reader remembers every row's key to report duplicates).",
        f"target: dry run of {largest['rows']:,} rows <= {DRY_RUN_TARGET_MB} MB: "
        f"{largest['peak_mb']:.0f} MB, "
        + ("met" if largest["peak_mb"] <= DRY_RUN_TARGET_MB else "NOT met"),
        f"target: scan of {biggest_scan['rows']:,} rows before anything is sent in about "
        f"{SCAN_TARGET_S:.0f} s: {biggest_scan['seconds']:.1f} s, "
        + ("met" if biggest_scan["seconds"] <= SCAN_TARGET_S * 1.25 else "NOT met"),
        f"workbook reader: python-calamine reads {book_rows:,} rows "
        f"{openpyxl['seconds'] / max(calamine['seconds'], 1e-9):.0f}x faster than openpyxl "
        f"({calamine['seconds']:.2f} s vs {openpyxl['seconds']:.2f} s) for "
        f"{_growth(calamine) - _growth(openpyxl):.0f} MB "
        "more memory (it holds the sheet's cells; openpyxl streams them), and it also reads "
        ".ods, which openpyxl does not: bulk_issuer reads workbooks with python-calamine.",
        *problems,
    ]
    return Report(
        name="reading",
        title="reading and validating learner files (CSV, .xlsx): speed and peak memory",
        headers=["what", "rows", "valid", "time", "rows/s", "peak RSS", "growth"],
        rows=rows,
        notes=notes,
        data={
            "reads": reads,
            "scans": scans,
            "workbooks": workbooks,
            "dry_runs": dry_runs,
            "target_mb": DRY_RUN_TARGET_MB,
            "scan_target_s": SCAN_TARGET_S,
        },
    )
