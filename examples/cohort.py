"""Issue a badge to a cohort in a CSV file, from a plain script.

    NAVIGATR_BASE_URL=http://127.0.0.1:8765 NAVIGATR_PAT=sandbox-demo-pat \
        python examples/cohort.py [cohort.csv]

`issue_badges_sync` runs its own event loop: no `asyncio` needed. The journal file makes
the script safe to run again: learners issued by an earlier run are skipped, and a run
that stopped half-way resumes where it stopped.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import bulk_issuer

cohort = sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("cohort.csv")

try:
    summary = bulk_issuer.issue_badges_sync(
        cohort,
        badge_id=51,
        auth=bulk_issuer.PersonalAccessToken(os.environ["NAVIGATR_PAT"]),
        base_url=os.environ.get("NAVIGATR_BASE_URL", bulk_issuer.DEFAULT_BASE_URL),
        journal="cohort-51.db",
        on_outcome=lambda o: print(f"row {o.row}: {o.email} {o.status}"),
    )
except bulk_issuer.InputError as exc:
    sys.exit(f"cannot read {exc.path or cohort}: {exc}")
except bulk_issuer.StoppedError as exc:
    # FatalError (credentials or badge refused) or UnavailableError (try again later);
    # the counts so far are in exc.summary, and a rerun resumes from the journal.
    sys.exit(f"stopped: {exc}")

print(
    f"issued {summary.issued}, already held {summary.already_held}, "
    f"skipped {summary.skipped}, failed {summary.failed}, invalid {summary.invalid}"
)
sys.exit(0 if summary.ok else 1)
