"""Issue a badge from an LMS export with its own column names, delimiter and date format.

    NAVIGATR_BASE_URL=http://127.0.0.1:8765 NAVIGATR_PAT=sandbox-demo-pat \
        python examples/custom_columns.py [lms_export.csv]

`ReadOptions(column_map=...)` maps a learner field (or an API field such as
`recipient_email`) to the export's own header; it wins over the built-in column names.
A header mapped to "" is not read. Columns not mapped and not known (here "Student ID"
and "Course") are kept with each row for the failures file, and not sent.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import bulk_issuer

export = sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("lms_export.csv")

options = bulk_issuer.ReadOptions(
    column_map={
        "first_name": "Given name",
        "last_name": "Family name",
        "email": "Contact e-mail",
        "issue_date": "Completed on",
    },
    delimiter=";",
    date_format="%d/%m/%Y",
)

summary = bulk_issuer.issue_badges_sync(
    export,
    badge_id=51,
    auth=bulk_issuer.PersonalAccessToken(os.environ["NAVIGATR_PAT"]),
    base_url=os.environ.get("NAVIGATR_BASE_URL", bulk_issuer.DEFAULT_BASE_URL),
    read_options=options,
    on_outcome=lambda o: print(f"row {o.row}: {o.email} {o.status} {o.reason or ''}".rstrip()),
)
print(f"issued {summary.issued}, invalid {summary.invalid}, failed {summary.failed}")
