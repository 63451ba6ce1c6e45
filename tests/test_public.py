"""The public surface: what the design promises is importable from `bulk_issuer`."""

from __future__ import annotations

import inspect

import bulk_issuer


def test_all_is_complete() -> None:
    """Every name in __all__ exists, and every public class or function is in __all__."""
    assert len(set(bulk_issuer.__all__)) == len(bulk_issuer.__all__)
    for name in bulk_issuer.__all__:
        assert hasattr(bulk_issuer, name), name
    public = {
        name
        for name, value in vars(bulk_issuer).items()
        if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
    }
    assert public <= set(bulk_issuer.__all__)


def test_design_names() -> None:
    """The names the design document makes stable."""
    for name in ("issue_badges", "Learner", "PersonalAccessToken", "PasswordAuth", "Summary"):
        assert name in bulk_issuer.__all__
    summary = bulk_issuer.Summary()
    assert (summary.issued, summary.failed, summary.invalid, summary.skipped) == (0, 0, 0, 0)
    assert bulk_issuer.__version__
