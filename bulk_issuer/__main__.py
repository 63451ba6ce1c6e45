"""`python -m bulk_issuer` is `bulk-issuer`."""

import sys

from .cli import main

sys.exit(main())
