"""Duplicates: the same learner twice for one badge is issued once, the second row reported."""

from __future__ import annotations

import hashlib
from array import array
from typing import Final

__all__ = ["SeenKeys"]

_MAX_ROW: Final = 2**32 - 1  # row numbers past 4 billion are reported as this one


class SeenKeys:
    """Which (badge, learner key) pairs were seen, in 12 bytes of table slot each.

    An open-addressing table of 8-byte BLAKE2b hashes and 4-byte row numbers in flat
    arrays: no Python object per entry, so a million learners cost 24 MB (36 MB while the
    table doubles), where a `set` of the keys would cost over 100 MB. Two different keys
    share a hash with odds of about 1 in 10^7 for 10^6 learners; such a row is reported
    as a duplicate, never dropped silently.
    """

    __slots__ = ("_count", "_hashes", "_mask", "_rows")

    def __init__(self) -> None:
        self._hashes = array("Q", [0]) * 1024
        self._rows = array("I", [0]) * 1024
        self._mask = 1023
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def first_row(self, token: str, row: int) -> int | None:
        """Return the row that first had `token`, or record `row` for it and return None."""
        digest = hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        wanted = int.from_bytes(digest, "little") or 1  # 0 marks an empty slot
        hashes, mask = self._hashes, self._mask
        slot = wanted & mask
        while (found := hashes[slot]) != 0:
            if found == wanted:
                return self._rows[slot]
            slot = (slot + 1) & mask
        hashes[slot] = wanted
        self._rows[slot] = min(row, _MAX_ROW)
        self._count += 1
        if self._count * 3 >= (mask + 1) * 2:
            self._grow()
        return None

    def _grow(self) -> None:
        old_hashes, old_rows = self._hashes, self._rows
        size = len(old_hashes) * 2
        self._hashes = hashes = array("Q", [0]) * size
        self._rows = rows = array("I", [0]) * size
        self._mask = mask = size - 1
        for wanted, row in zip(old_hashes, old_rows, strict=True):
            if wanted:
                slot = wanted & mask
                while hashes[slot]:
                    slot = (slot + 1) & mask
                hashes[slot] = wanted
                rows[slot] = row
