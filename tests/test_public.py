"""The public surface: what the design promises is importable from `bulk_issuer`."""

from __future__ import annotations

import enum
import inspect
import pydoc
import re
from typing import Any

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


def _documented(doc: str, name: str) -> bool:
    """Whether `doc` has an `Args:`/`Attributes:` style entry for `name`."""
    return re.search(rf"^\s+\*{{0,2}}{name}\b[^\n]*:", doc, re.M) is not None


def _raises(function: Any) -> bool:
    """Whether the function's own code raises an exception on purpose."""
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):  # generated (a dataclass's __init__): raises nothing
        return False
    return re.search(r"^\s+raise [A-Z]", source, re.M) is not None


def _public_callables() -> list[tuple[str, Any]]:
    """Every function in __all__, and every public method of every class in it."""
    found: list[tuple[str, Any]] = []
    for name in bulk_issuer.__all__:
        value = getattr(bulk_issuer, name)
        if inspect.isfunction(value):
            found.append((name, value))
        elif inspect.isclass(value) and not issubclass(value, BaseException | enum.Enum):
            for attr, member in vars(value).items():
                function = getattr(member, "__func__", member)
                if not attr.startswith("_") and inspect.isfunction(function):
                    found.append((f"{name}.{attr}", function))
    return found


def test_every_public_name_has_a_docstring() -> None:
    """Every class and function in __all__ says what it is; `pydoc bulk_issuer` reads whole."""
    undocumented = [
        name
        for name in bulk_issuer.__all__
        if (inspect.isclass(value := getattr(bulk_issuer, name)) or inspect.isfunction(value))
        and not (value.__doc__ or "").strip()
    ]
    assert undocumented == []
    assert bulk_issuer.__doc__
    text = pydoc.plain(pydoc.render_doc(bulk_issuer))
    assert all(name in text for name in bulk_issuer.__all__ if name != "__version__")


def test_every_constructor_argument_is_documented() -> None:
    """A public class's docstring names each argument it is built with, and what it raises."""
    missing: list[str] = []
    for name in bulk_issuer.__all__:
        cls = getattr(bulk_issuer, name)
        if not inspect.isclass(cls) or issubclass(cls, enum.Enum) or cls is bulk_issuer.EventSink:
            continue
        try:
            parameters = inspect.signature(cls).parameters.values()
        except ValueError:  # Exception's own constructor: nothing of ours to document
            continue
        for parameter in parameters:
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            # An error's message is its str(); every other argument is an attribute.
            if parameter.name == "message" and issubclass(cls, BaseException):
                continue
            if not _documented(cls.__doc__ or "", parameter.name):
                missing.append(f"{name}({parameter.name})")
        checks = [vars(cls)[m] for m in ("__init__", "__post_init__") if m in vars(cls)]
        if any(_raises(f) for f in checks) and "Raises:" not in (cls.__doc__ or ""):
            missing.append(f"{name}: its constructor raises, but no Raises:")
    assert missing == []


def test_every_public_function_documents_its_arguments_returns_and_raises() -> None:
    """Args: for every parameter, Returns: when it returns something, Raises: when it raises."""
    problems: list[str] = []
    for name, function in _public_callables():
        doc = inspect.getdoc(function) or ""
        if not doc:
            problems.append(f"{name}: no docstring")
            continue
        signature = inspect.signature(function)
        for parameter in signature.parameters:
            if parameter not in ("self", "cls") and not _documented(doc, parameter):
                problems.append(f"{name}: argument {parameter} not in Args:")
        returns = signature.return_annotation
        if returns not in (None, "None", inspect.Signature.empty) and not re.search(
            r"^(Returns|Yields):", doc, re.M
        ):
            problems.append(f"{name}: no Returns:")
        if _raises(function) and "Raises:" not in doc:
            problems.append(f"{name}: raises, but no Raises:")
    for name in ("issue_badges", "issue_badges_sync", "BadgeIssuer"):
        if "Raises:" not in (getattr(bulk_issuer, name).__doc__ or ""):
            problems.append(f"{name}: no Raises:")
    assert problems == []
