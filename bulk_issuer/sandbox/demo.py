"""`make demo`: start the sandbox, issue the sample cohort through it, show the summary."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from importlib.resources import as_file, files
from pathlib import Path

from ..cli import main as cli_main

DEMO_PAT = "sandbox-demo-pat"


def _free_port(preferred: int) -> int:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(port: int, process: subprocess.Popen[bytes], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("the sandbox did not start (see its message above)")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"the sandbox did not answer on port {port} within {seconds:.0f}s")


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the `issue` command's exit status."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    port = _free_port(args.port)
    sandbox = subprocess.Popen(  # noqa: S603 - our own interpreter and module, fixed arguments
        [
            sys.executable,
            "-m",
            "bulk_issuer",
            "sandbox",
            "--port",
            str(port),
            "--latency",
            "30-90ms",
        ]
    )
    try:
        _wait_for(port, sandbox)
        with (
            tempfile.TemporaryDirectory() as work,
            as_file(files("bulk_issuer.sandbox").joinpath("sample_cohort.csv")) as sample,
        ):
            cohort = Path(work) / "sample_cohort.csv"
            cohort.write_bytes(sample.read_bytes())
            os.environ["NAVIGATR_PAT"] = DEMO_PAT
            log = Path(work) / "events.jsonl"
            argv_issue = [
                "issue",
                str(cohort),
                "--badge",
                "51",
                "--base-url",
                f"http://127.0.0.1:{port}",
                "--yes",
                "--log",
                str(log),
            ]
            print(f"$ NAVIGATR_PAT=... bulk-issuer {' '.join(argv_issue)}", flush=True)
            status = cli_main(argv_issue)
            print(f"exit status {status}; the first events of --log:")
            for line in log.read_text(encoding="utf-8").splitlines()[:3]:
                print(f"  {line}")
            return status
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
