"""The sandbox's endpoints and its authentication check, shaped like Navigatr's FastAPI."""

from __future__ import annotations

import asyncio
import hmac
import math
from typing import Any

from aiohttp import hdrs, web

from bulk_issuer.sandbox.faults import drop
from bulk_issuer.sandbox.state import SANDBOX_KEY, Sandbox
from bulk_issuer.sandbox.validation import (
    ApiError,
    FieldError,
    field_error,
    is_json_media,
    parse_json_object,
    validate_issue_body,
    validate_path_int,
    validate_query_int,
)

__all__ = [
    "add_slash",
    "authenticate",
    "badge",
    "issue",
    "lookup",
    "token",
    "user_detail",
]

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
# What a lookup answers with lookup_shape="html": the proxy's page, status 200.
_MAINTENANCE_PAGE = (
    "<!DOCTYPE html><html><head><title>Down for maintenance</title></head>"
    "<body><h1>We'll be back soon</h1><p>Navigatr is down for scheduled maintenance.</p>"
    "</body></html>\n"
)
# How lookup_shape="email_key" renames an assertion's fields.
_EMAIL_KEYS = {"recipient_email": "email"}


def _sandbox(request: web.Request) -> Sandbox:
    return request.app[SANDBOX_KEY]


def _media_type(request: web.Request) -> str | None:
    # aiohttp reports a missing header as application/octet-stream; FastAPI treats a
    # missing one as "try JSON", so the difference matters.
    return request.content_type if hdrs.CONTENT_TYPE in request.headers else None


def _account(sandbox: Sandbox) -> str:
    """The username a PAT acts as: the sandbox is a single-account stand-in."""
    return next(iter(sandbox.config.users), "sandbox-user@example.com")


def authenticate(sandbox: Sandbox, request: web.Request) -> str:
    """The username behind the request's credential, or raise a 401 ``ApiError``.

    A bearer token from ``/v1/token`` is accepted in ``Authorization: Bearer``; a PAT in
    whichever header ``config.pat_header`` allows.
    """
    config = sandbox.config
    now = asyncio.get_running_loop().time()
    expired = False
    scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    bearer = credentials.strip() if scheme.lower() == "bearer" else ""
    if bearer:
        state, username = sandbox.tokens.check(bearer, now=now)
        if state == "valid" and username is not None:
            return username
        expired = state == "expired"
        if config.pat_header != "x-access-token" and bearer in config.pats:
            return _account(sandbox)
    pat = request.headers.get("X-Access-Token", "").strip()
    if pat and config.pat_header != "bearer" and pat in config.pats:
        return _account(sandbox)
    detail = "Token expired" if expired else "Not authenticated"
    if config.echo_secrets and (received := [value for value in (bearer, pat) if value]):
        # A careless server repeats what it was sent; a client must not log it as is.
        detail += ": " + "; ".join(f"token {value} is not valid" for value in received)
    raise ApiError(401, detail, _CHALLENGE)


async def _login_fields(sandbox: Sandbox, request: web.Request) -> dict[str, Any]:
    """The login body as a dict, read as JSON or as an OAuth2 password form per token_mode."""
    mode = sandbox.config.token_mode
    media = _media_type(request)
    if media in _FORM_TYPES:
        if mode == "json":
            # A JSON-model endpoint sees form data as raw bytes: not an object, 422.
            return parse_json_object(await request.read(), media)
        form = await request.post()
        fields = {key: value for key, value in form.items() if isinstance(value, str)}
        if (grant := fields.get("grant_type")) is not None and grant != "password":
            msg = "String should match pattern '^password$'"
            raise ApiError(
                422, [field_error(("body", "grant_type"), msg, "string_pattern_mismatch")]
            )
        return fields
    if media is None or is_json_media(media):
        if mode == "form":
            # An OAuth2 form endpoint finds no form fields in a JSON body.
            missing = [
                field_error(("body", f), "Field required", "missing")
                for f in ("username", "password")
            ]
            raise ApiError(422, missing)
        return parse_json_object(await request.read(), media)
    raise ApiError(415, "Unsupported Media Type")


async def token(request: web.Request) -> web.Response:
    """``POST /v1/token``: log in with username and password, get ``{"access_token"}``."""
    sandbox = _sandbox(request)
    fields = await _login_fields(sandbox, request)
    errors: list[FieldError] = []
    for name in ("username", "password"):
        if name not in fields:
            errors.append(field_error(("body", name), "Field required", "missing"))
        elif not isinstance(fields[name], str):
            errors.append(
                field_error(("body", name), "Input should be a valid string", "string_type")
            )
    if errors:
        raise ApiError(422, errors)

    username, password = fields["username"], fields["password"]
    known = {name.casefold(): (name, secret) for name, secret in sandbox.config.users.items()}
    account = known.get(username.casefold())
    if account is None or not hmac.compare_digest(account[1].encode(), password.encode()):
        detail = "Incorrect username or password"
        if sandbox.config.echo_secrets:
            # The body as received (already read, so this is aiohttp's cached copy).
            received = (await request.read()).decode("utf-8", "replace")
            detail += f"; request body was: {received or fields}"
        raise ApiError(401, detail, _CHALLENGE)
    access_token = sandbox.tokens.mint(
        account[0],
        now=asyncio.get_running_loop().time(),
        ttl=sandbox.config.token_ttl,
        jwt=sandbox.config.jwt_tokens,
    )
    # Exactly this and nothing else: the real API sends no expires_in or token_type.
    return web.json_response({"access_token": access_token})


async def issue(request: web.Request) -> web.StreamResponse:
    """``PUT /v1/badge/{badge_id}/issue``: create one assertion (no idempotency, like the API)."""
    sandbox = _sandbox(request)
    config = sandbox.config
    badge_id = validate_path_int("badge_id", request.match_info["badge_id"])
    fields = validate_issue_body(parse_json_object(await request.read(), _media_type(request)))
    if badge_id in config.forbidden_badges:
        raise ApiError(403, "You do not have permission to issue this badge")
    # Before the 404: an archived badge need not also be listed in config.badges.
    if badge_id in config.archived_badges:
        raise ApiError(409, "Badge is archived")
    if badge_id not in config.badges:
        raise ApiError(404, "Badge not found")
    domain = str(fields.get("recipient_email", "")).rpartition("@")[2].lower()
    if domain in config.undeliverable:
        message = f"value is not a valid email address: {domain} does not accept email"
        raise ApiError(422, [field_error(("body", "recipient_email"), message, "value_error")])
    provider = fields.get("provider_id")
    if provider is not None and provider not in config.providers:
        raise ApiError(404, "Provider not found")
    email = fields.get("recipient_email")
    if config.conflict_on_held and email is not None and sandbox.holds(badge_id, email):
        raise ApiError(409, "Recipient already has this badge")
    assertion = sandbox.add_assertion(badge_id, fields)
    if sandbox.chance(config.drop_after_rate):
        # The ambiguous case: the badge is issued, the client never hears so.
        return drop(request)
    return web.json_response(assertion)


async def lookup(request: web.Request) -> web.Response:
    """``GET /v1/badge_assertion/``: assertions filtered and paginated (page from 1).

    Shaped by ``config.lookup_shape`` and capped at ``config.lookup_max_size`` per page.
    """
    sandbox = _sandbox(request)
    config = sandbox.config
    if config.lookup == "forbidden":
        raise ApiError(403, "You do not have permission to view badge assertions")
    if config.lookup == "missing":
        raise ApiError(404, "Not Found")
    shape = config.lookup_shape
    if shape == "html":
        return web.Response(text=_MAINTENANCE_PAGE, content_type="text/html")

    query = request.query
    errors: list[FieldError] = []
    badge_id = validate_query_int(errors, "badge_id", query.get("badge_id"), default=None)
    page = validate_query_int(errors, "page", query.get("page"), default=1, low=1)
    size = validate_query_int(errors, "size", query.get("size"), default=50, low=1, high=100)
    if errors:
        raise ApiError(422, errors)
    if config.lookup_max_size is not None:
        size = min(size, config.lookup_max_size)

    unfiltered = shape in ("ignore_email_filter", "unfiltered_no_counts")
    if shape == "ignore_badge_filter":
        badge_id = None
    email = None if unfiltered else query.get("recipient_email")
    exact = shape == "lowercase_exact_filter"
    wanted_email = email if email is None or exact else email.casefold()

    def kept(address: str | None) -> str:
        # How the server keeps an address, as its filter compares it.
        return (address or "").lower() if exact else (address or "").casefold()

    status = query.get("status")
    # A list behind its writes: what was made less than `lookup_lag` ago is not there yet.
    shown_before = asyncio.get_running_loop().time() - config.lookup_lag
    matches = [
        a
        for a in sandbox.assertions
        if sandbox.made_at.get(a["id"], -math.inf) <= shown_before
        and (badge_id is None or a["badge_id"] == badge_id)
        and (wanted_email is None or kept(a.get("recipient_email")) == wanted_email)
        and (status is None or a["status"] == status)
    ]
    items = matches[(page - 1) * size : page * size]
    if shape == "lagging_filter" and email is not None:
        # The filter's index lags: it counts the learner's assertions but lists none.
        items = []
    if shape == "email_key":
        items = [{_EMAIL_KEYS.get(key, key): value for key, value in a.items()} for a in items]
    if shape == "bare_list":
        return web.json_response(items)
    if shape == "unfiltered_no_counts":
        return web.json_response({"items": items, "page": page})
    body: dict[str, Any] = {
        shape if shape in ("data", "results") else "items": items,
        "page": page,
        "pages": math.ceil(len(matches) / size),
        "size": size,
        "total": len(matches),
    }
    if shape == "no_pages":
        del body["pages"]
    elif shape == "pages_na":
        body["pages"] = "n/a"
    return web.json_response(body)


async def add_slash(request: web.Request) -> web.Response:
    """FastAPI's redirect_slashes: the lookup without its trailing slash answers 307."""
    location = request.url.with_path(request.path + "/").with_query(request.query)
    return web.Response(status=307, headers={hdrs.LOCATION: str(location)})


async def badge(request: web.Request) -> web.Response:
    """``GET /v1/badge/{badge_id}``: the badge, if it exists and this account may see it."""
    sandbox = _sandbox(request)
    config = sandbox.config
    if config.badge_endpoint == "missing":
        raise ApiError(404, "Not Found")  # as an API without this route answers
    if config.badge_endpoint == "forbidden":
        raise ApiError(403, "You do not have permission to view badges")
    badge_id = validate_path_int("badge_id", request.match_info["badge_id"])
    if badge_id in config.forbidden_badges:
        raise ApiError(403, "You do not have permission to access this badge")
    archived = badge_id in config.archived_badges
    name = config.badges.get(badge_id)
    if name is None and archived:
        name = f"Archived badge {badge_id}"
    if name is None:
        raise ApiError(404, "Badge not found")
    return web.json_response(
        {
            "id": badge_id,
            "name": name,
            "provider_id": 1,
            "status": "Archived" if archived else "Published",
            "url": f"{sandbox.url}/badge/{badge_id}",
        }
    )


async def user_detail(request: web.Request) -> web.Response:
    """``GET /v1/user_detail/0``: who the credential belongs to (how a PAT is checked)."""
    user_id = validate_path_int("user_id", request.match_info["user_id"])
    if user_id not in (0, 1):
        raise ApiError(404, "User not found")
    # Already checked by the pipeline; asked again here only to learn whose it is.
    username = authenticate(_sandbox(request), request)
    return web.json_response({"id": 1, "username": username, "email": username})
