"""Which account a run spends: the API base URL and a fingerprint of its credentials."""

from __future__ import annotations

import hashlib

__all__ = ["account_key", "learner_hash"]


def account_key(base_url: str, identity: str) -> str:
    """A short hex key for one account; the credential itself never leaves this function.

    Args:
        base_url: the API root.
        identity: the user name, or the personal access token.
    """
    fingerprint = hashlib.sha256(identity.encode()).hexdigest()
    both = f"{base_url.rstrip('/').lower()}\n{fingerprint}".encode()
    return hashlib.sha256(both).hexdigest()[:24]


def learner_hash(learner_key: str) -> str:
    """The ledger's key for a learner: a hash of the normalised email, not the address."""
    return hashlib.sha256(learner_key.encode()).hexdigest()[:32]
