"""Request validation shaped like FastAPI's: ``422 {"detail": [{"loc", "msg", "type"}]}``.

The real API is a FastAPI service with pydantic models, so the sandbox answers malformed
input the same way: every problem in one list, each naming where it was (``body``,
``query`` or ``path``, then the field).
"""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any, overload

import email_validator
from aiohttp import web

__all__ = [
    "ApiError",
    "FieldError",
    "check_email",
    "field_error",
    "is_json_media",
    "parse_json_object",
    "validate_issue_body",
    "validate_path_int",
    "validate_query_int",
]

FieldError = dict[str, Any]

_INT = re.compile(r"[+-]?\d+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

# Optional fields of the issue body that have a type (per the reference and the web CSV
# template); None is always allowed, and any other field passes through untouched.
_OPTIONAL: dict[str, type] = {
    "recipient_lastname": str,
    "recipient_organisation": str,
    "evidence_text": str,
    "evidence_url": str,
    "recipient_id": int,
    "provider_id": int,
    "score": int,
    "min_score": int,
    "issue_date": date,
    "end_date": date,
}


class ApiError(Exception):
    """An answer other than success: becomes ``{"detail": ...}`` with this status."""

    def __init__(
        self,
        status: int,
        detail: str | list[FieldError],
        headers: dict[str, str] | None = None,
    ) -> None:
        """Describe the answer; ``detail`` is a message or a list of field errors."""
        super().__init__(status, detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}

    def response(self) -> web.Response:
        """The JSON response for this error."""
        return web.json_response({"detail": self.detail}, status=self.status, headers=self.headers)


def field_error(loc: tuple[str | int, ...], msg: str, kind: str) -> FieldError:
    """One item of a 422 detail list."""
    return {"loc": list(loc), "msg": msg, "type": kind}


def _missing(loc: tuple[str | int, ...]) -> FieldError:
    return field_error(loc, "Field required", "missing")


def _not_an_object() -> ApiError:
    msg = "Input should be a valid dictionary or object to extract fields from"
    return ApiError(422, [field_error(("body",), msg, "model_attributes_type")])


def parse_json_object(raw: bytes, content_type: str | None) -> dict[str, Any]:
    """Parse a request body that must be a JSON object, or raise a 422 ``ApiError``.

    Args:
        raw: the body bytes.
        content_type: the Content-Type header's media type, None when absent (FastAPI
            then still tries JSON).
    """
    if not raw:
        raise ApiError(422, [_missing(("body",))])
    if content_type is not None and not is_json_media(content_type):
        # FastAPI hands a non-JSON body to the model as raw bytes, which is not an object.
        raise _not_an_object()
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        pos = exc.pos if isinstance(exc, json.JSONDecodeError) else exc.start
        raise ApiError(
            422, [field_error(("body", pos), "JSON decode error", "json_invalid")]
        ) from None
    if not isinstance(data, dict):
        raise _not_an_object()
    return data


def is_json_media(content_type: str) -> bool:
    """Whether a media type is JSON (``application/json`` or ``application/*+json``)."""
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def _check_str(loc: tuple[str, ...], value: object, *, required: bool) -> FieldError | None:
    if not isinstance(value, str):
        return field_error(loc, "Input should be a valid string", "string_type")
    if required and not value.strip():
        return field_error(loc, "String should have at least 1 character", "string_too_short")
    return None


def _check_int(loc: tuple[str, ...], value: object) -> FieldError | None:
    # pydantic's lax mode takes an int or a string of digits, never a bool or a float string.
    if isinstance(value, bool) or not isinstance(value, int | str):
        return field_error(loc, "Input should be a valid integer", "int_type")
    if isinstance(value, str) and not _INT.fullmatch(value.strip()):
        msg = "Input should be a valid integer, unable to parse string as an integer"
        return field_error(loc, msg, "int_parsing")
    return None


def _check_date(loc: tuple[str, ...], value: object) -> FieldError | None:
    msg = "Input should be a valid date in the format YYYY-MM-DD"
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        return field_error(loc, msg, "date_parsing")
    try:
        date.fromisoformat(value)
    except ValueError:
        return field_error(loc, msg, "date_parsing")
    return None


def check_email(value: str) -> tuple[str | None, FieldError | None]:
    """Validate an address the way pydantic's ``EmailStr`` does; return (normalized, error)."""
    loc = ("body", "recipient_email")
    try:
        checked = email_validator.validate_email(value, check_deliverability=False)
    except email_validator.EmailNotValidError as exc:
        return None, field_error(loc, f"value is not a valid email address: {exc}", "value_error")
    return checked.normalized, None


def validate_issue_body(body: dict[str, Any]) -> dict[str, Any]:
    """Check an issue body; return it with the email normalized, or raise a 422 ``ApiError``.

    ``recipient_firstname`` is required and non-blank; ``recipient_email`` is required
    unless ``recipient_id`` is given, and must be a valid address.
    """
    errors: list[FieldError] = []
    checked = dict(body)

    if "recipient_firstname" not in body:
        errors.append(_missing(("body", "recipient_firstname")))
    elif problem := _check_str(
        ("body", "recipient_firstname"), body["recipient_firstname"], required=True
    ):
        errors.append(problem)

    email = body.get("recipient_email")
    if email is None:
        if body.get("recipient_id") is None:
            errors.append(_missing(("body", "recipient_email")))
    elif problem := _check_str(("body", "recipient_email"), email, required=True):
        errors.append(problem)
    else:
        normalized, problem = check_email(email)
        if problem:
            errors.append(problem)
        checked["recipient_email"] = normalized

    for name, kind in _OPTIONAL.items():
        value = body.get(name)
        if value is None:
            continue
        loc = ("body", name)
        if kind is str:
            problem = _check_str(loc, value, required=False)
        elif kind is int:
            problem = _check_int(loc, value)
            if problem is None:
                checked[name] = int(value)
        else:
            problem = _check_date(loc, value)
        if problem:
            errors.append(problem)

    if errors:
        raise ApiError(422, errors)
    return checked


def validate_path_int(name: str, value: str) -> int:
    """Parse an integer path parameter, or raise a 422 ``ApiError``."""
    if problem := _check_int(("path", name), value):
        raise ApiError(422, [problem])
    return int(value)


@overload
def validate_query_int(
    errors: list[FieldError],
    name: str,
    value: str | None,
    *,
    default: int,
    low: int | None = None,
    high: int | None = None,
) -> int: ...


@overload
def validate_query_int(
    errors: list[FieldError],
    name: str,
    value: str | None,
    *,
    default: None,
    low: int | None = None,
    high: int | None = None,
) -> int | None: ...


def validate_query_int(
    errors: list[FieldError],
    name: str,
    value: str | None,
    *,
    default: int | None,
    low: int | None = None,
    high: int | None = None,
) -> int | None:
    """Parse an optional integer query parameter, appending any problem to ``errors``."""
    if value is None:
        return default
    loc = ("query", name)
    if problem := _check_int(loc, value):
        errors.append(problem)
        return default
    number = int(value)
    if low is not None and number < low:
        errors.append(
            field_error(
                loc, f"Input should be greater than or equal to {low}", "greater_than_equal"
            )
        )
    elif high is not None and number > high:
        errors.append(
            field_error(loc, f"Input should be less than or equal to {high}", "less_than_equal")
        )
    return number
