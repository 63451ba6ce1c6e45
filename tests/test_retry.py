"""The request path's retry decisions (`RequestRetry`), its policy, and the server's wait hints."""

from __future__ import annotations

import functools
import json
import math
import random
import time
from email.utils import formatdate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from bulk_issuer.retry import (
    Again,
    Deliver,
    Refresh,
    RequestRetry,
    RetryPolicy,
    Step,
    TooLong,
    retry_after,
)

#: No jitter surprises: every backoff in these tables is drawn from a seeded source.
POLICY = RetryPolicy(attempts=3, base=1.0, cap=8.0, rate_limited_attempts=2, max_wait=60.0)


def steps(
    replies: list[tuple[int | None, float | None]],
    *,
    refreshable: bool = True,
    outage: bool = False,
    policy: RetryPolicy = POLICY,
) -> list[Step]:
    """The decisions for a series of (status, hint) replies to one request."""
    retry = RequestRetry(policy, refreshable=refreshable, rng=random.Random(0))
    return [retry.step(status, hint=hint, outage=outage) for status, hint in replies]


@pytest.mark.parametrize("status", [200, 201, 204, 400, 403, 404, 409, 422, 500, 502, 504, 302])
def test_a_final_answer_is_delivered(status: int) -> None:
    """Answers that say nothing about trying again go straight back to the caller."""
    assert steps([(status, None)]) == [Deliver()]


def test_a_hint_on_a_final_answer_is_not_a_wait() -> None:
    """A Retry-After on a 200 or a 409 does not make it retryable, however long."""
    assert steps([(200, 3600.0), (409, 5.0)]) == [Deliver(), Deliver()]


def test_401_refreshes_once_then_delivers() -> None:
    """A refused token is refreshed once; a second 401 is the caller's to judge."""
    assert steps([(401, None), (401, None)]) == [Refresh(), Deliver()]


def test_401_with_a_pat_is_delivered_at_once() -> None:
    """A PAT cannot be refreshed: the first 401 is final."""
    assert steps([(401, None)], refreshable=False) == [Deliver()]


def test_429_waits_the_servers_hint_under_its_own_budget() -> None:
    """429s are retried with the server's wait (0 without one) until the budget is spent."""
    assert steps([(429, 3.0), (429, None), (429, 1.0)]) == [
        Again(3.0, "HTTP 429", rate_limited=True, streak=1),
        Again(0.0, "HTTP 429", rate_limited=True, streak=2),
        Deliver(),
    ]


def test_429s_in_a_row_wait_longer_each_time_up_to_the_cap() -> None:
    """The first 429 waits what it asks; each one in a row after it about twice as long
    (jitter takes at most a quarter off), never past the cap nor below what was asked."""
    rng = random.Random(1)
    waits = [POLICY.rate_limited_wait(2.0, streak, rng) for streak in range(1, 7)]
    assert waits[0] == 2.0
    for streak, wait in enumerate(waits[1:], start=2):
        ceiling = min(POLICY.cap, 2.0 * 2 ** (streak - 1))
        assert 0.75 * ceiling <= wait <= ceiling
    assert POLICY.rate_limited_wait(20.0, 3, rng) == 20.0  # a long Retry-After is not cut


def test_another_reply_ends_a_streak_of_429s() -> None:
    """A 503 between two 429s: the second 429 starts a new streak."""
    policy = RetryPolicy(rate_limited_attempts=5)
    out = steps([(429, None), (429, None), (503, 1.0), (429, None)], policy=policy)
    assert [s.streak for s in out if isinstance(s, Again) and s.rate_limited] == [1, 2, 1]


def test_429s_do_not_spend_the_attempts() -> None:
    """A 503 after two 429s still has its whole budget of three."""
    out = steps([(429, None), (429, None), (503, 1.0), (503, 1.0), (503, 1.0)])
    assert [type(s) for s in out] == [Again, Again, Again, Again, Deliver]


@pytest.mark.parametrize("status", [429, 503])
def test_a_wait_past_max_wait_is_too_long(status: int) -> None:
    """A 429 or a 503 asking for longer than max_wait stops the run instead of waiting."""
    assert steps([(status, 3600.0)]) == [TooLong(3600.0, f"HTTP {status}")]


@pytest.mark.parametrize("status", [429, 503])
def test_a_wait_at_max_wait_is_honoured(status: int) -> None:
    """Exactly max_wait is still honoured."""
    (step,) = steps([(status, 60.0)])
    assert isinstance(step, Again)
    assert step.wait == 60.0


def test_503_backs_off_with_jitter_then_delivers() -> None:
    """503 without a hint: capped, jittered backoff; after `attempts` it is delivered."""
    out = steps([(503, None)] * 3)
    assert isinstance(out[0], Again)
    assert 0 <= out[0].wait <= 1.0
    assert isinstance(out[1], Again)
    assert 0 <= out[1].wait <= 2.0
    assert out[0].why == "HTTP 503"
    assert out[2] == Deliver()


def test_503_honours_the_servers_hint() -> None:
    """A 503 with Retry-After waits that long, not the backoff."""
    assert steps([(503, 7.0)]) == [Again(7.0, "HTTP 503")]


def test_no_connection_gets_three_times_the_attempts() -> None:
    """A connection that never opened is retried 3 x attempts times (it was not sent)."""
    out = steps([(None, None)] * 9)
    assert all(isinstance(s, Again) and s.why == "no connection" for s in out[:8])
    assert out[8] == Deliver()


@pytest.mark.parametrize("status", [None, 503, 429])
def test_an_outage_does_not_spend_the_budget(status: int | None) -> None:
    """While every sender fails, the request keeps trying: the client's outage limit decides."""
    out = steps([(status, None)] * 50, outage=True)
    assert all(isinstance(s, Again) for s in out)


def test_attempts_of_one() -> None:
    """With one attempt a 503 is delivered at once, a refused connection after three."""
    policy = RetryPolicy(attempts=1)
    assert steps([(503, None)], policy=policy) == [Deliver()]
    out = steps([(None, None)] * 3, policy=policy)
    assert [type(s) for s in out] == [Again, Again, Deliver]


# -- the policy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 0}, "attempts must be at least 1, got 0"),
        ({"rate_limited_attempts": 0}, "rate_limited_attempts must be at least 1, got 0"),
        ({"base": -1.0}, "base must not be negative, got -1.0"),
        ({"cap": -0.5}, "cap must not be negative"),
        ({"max_wait": -1}, "max_wait must not be negative"),
        ({"outage": -1}, "outage must not be negative"),
        ({"unreachable": -1}, "unreachable must not be negative"),
        ({"deadline": 0}, "deadline must be more than 0 seconds, got 0"),
        ({"deadline": -3}, "deadline must be more than 0 seconds"),
        ({"deadline": math.nan}, "deadline must be more than 0 seconds"),
        ({"base": math.nan}, "base must not be negative"),
        ({"outage": math.nan}, "outage must not be negative"),
    ],
)
def test_policy_refuses_values_out_of_range(kwargs: dict[str, float], message: str) -> None:
    """Each out-of-range value is refused with a ValueError naming it."""
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_defaults_and_edges_are_accepted() -> None:
    """The defaults, zero waits and an infinite outage are all valid."""
    RetryPolicy()
    RetryPolicy(base=0, cap=0, max_wait=0, outage=0, unreachable=0, deadline=0.001)
    RetryPolicy(outage=math.inf)


def test_backoff_is_capped_full_jitter() -> None:
    """Waits stay within [0, min(cap, base * 2^(n-1))] and actually vary."""
    policy = RetryPolicy(base=1.0, cap=8.0)
    rng = random.Random(1)
    for failures in range(1, 10):
        ceiling = min(8.0, 2 ** (failures - 1))
        waits = [policy.backoff(failures, rng) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling * 0.8
        assert min(waits) < ceiling * 0.2


def test_backoff_after_thousands_of_failures_stays_capped() -> None:
    """A long outage (thousands of failures) neither overflows nor passes the cap."""
    policy = RetryPolicy(base=1.0, cap=30.0)
    assert 0 <= policy.backoff(5000, random.Random(2)) <= 30.0


# -- the server's wait hints ---------------------------------------------------------------


def test_retry_after_seconds() -> None:
    """Retry-After as delta-seconds."""
    assert retry_after(CIMultiDict({"retry-after": "3"})) == 3.0


def test_retry_after_http_date() -> None:
    """Retry-After as an HTTP-date counts from now."""
    now = 1_700_000_000.0
    headers = CIMultiDict({"Retry-After": formatdate(now + 7, usegmt=True)})
    assert retry_after(headers, now=now) == pytest.approx(7.0)


def test_retry_after_past_date_is_zero() -> None:
    """A date in the past means now."""
    now = 1_700_000_000.0
    assert (
        retry_after(CIMultiDict({"Retry-After": formatdate(now - 60, usegmt=True)}), now=now) == 0
    )


def test_ietf_ratelimit_header() -> None:
    """Without Retry-After, the draft RateLimit header's reset is used."""
    headers = CIMultiDict(
        {"RateLimit": "limit=5, remaining=0, reset=2", "RateLimit-Policy": "5;w=2"}
    )
    assert retry_after(headers) == 2.0


def test_x_ratelimit_reset_epoch_and_delta() -> None:
    """X-RateLimit-Reset as an epoch timestamp (in seconds or in milliseconds, as some
    gateways send it) or as seconds; so is the draft's reset."""
    now = 1_700_000_000.0
    for reset in (str(int(now) + 4), str(int(now * 1000) + 4000), "4"):
        assert retry_after(CIMultiDict({"X-RateLimit-Reset": reset}), now=now) == 4.0
        assert retry_after(CIMultiDict({"RateLimit": f"reset={reset}"}), now=now) == 4.0


def test_the_structured_draft_header_reset_is_t_not_r() -> None:
    """`"default";r=0;t=3`: r is the remaining count (0), t the reset (3 s)."""
    assert retry_after(CIMultiDict({"RateLimit": '"default";r=0;t=3'})) == 3.0
    assert retry_after(CIMultiDict({"RateLimit": '"default";r=7'})) is None


def test_no_hint() -> None:
    """Nothing said, nothing returned; garbage is ignored."""
    assert retry_after(CIMultiDict()) is None
    assert retry_after(CIMultiDict({"Retry-After": "soon"})) is None


@pytest.mark.parametrize(
    "value",
    [
        "9" * 100_000,  # a huge header: not a wait, whatever its digits say
        "3" + " " * 500,  # padded past any sane length
        "-5",
        "-0.5",
        "nan",
        "inf",
        "1e9",
        "0x10",
        "3 days",
        "Mon, 99 Foo 2024 99:99:99 GMT",
    ],
)
def test_senseless_retry_after_is_ignored(value: str) -> None:
    """Huge, negative, not finite or malformed values give no hint at all."""
    assert retry_after(CIMultiDict({"Retry-After": value})) is None


def test_senseless_retry_after_falls_through_to_the_other_headers() -> None:
    """A garbled Retry-After does not hide a good RateLimit reset."""
    headers = CIMultiDict({"Retry-After": "-1", "RateLimit": "limit=5, remaining=0, reset=2"})
    assert retry_after(headers) == 2.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-RateLimit-Reset": "-3"}, None),
        ({"X-RateLimit-Reset": "9" * 1000}, None),
        ({"RateLimit": "reset=-3"}, None),
        ({"RateLimit": "limit=5, reset=" + "9" * 1000}, None),
    ],
)
def test_senseless_ratelimit_headers_are_ignored(
    headers: dict[str, str], expected: float | None
) -> None:
    """The fallback headers follow the same rules."""
    assert retry_after(CIMultiDict(headers)) == expected


def test_an_absurd_but_well_formed_wait_is_returned_for_the_policy_to_refuse() -> None:
    """A year is a number, not garbage: the policy turns it into a clean stop (TooLong)."""
    year = 365 * 86400.0
    assert retry_after(CIMultiDict({"Retry-After": str(int(year))})) == year
    assert isinstance(steps([(429, year)])[0], TooLong)


def test_answer_detail_reads_fastapi_and_proxy_pages() -> None:
    """An answer's reason: FastAPI's detail (string or list), or an HTML page's title."""
    from bulk_issuer.client import Answer

    listed = {
        "detail": [
            {"loc": ["body", "recipient_email"], "msg": "value is not a valid email address"}
        ]
    }
    assert Answer(422, listed, {}).detail == "recipient_email: value is not a valid email address"
    assert Answer(404, {"detail": "Badge not found"}, {}).detail == "Badge not found"
    page = (
        "<html><head><title>504 Gateway Time-out</title></head><body><h1>504</h1></body></html>\n"
    )
    assert Answer(504, page, {}).detail == "504 Gateway Time-out"
    assert Answer(500, "", {}).detail == "HTTP 500"


def json_spelled(text: str, escape: list[bool]) -> str:
    """`text` inside a JSON string, each character escaped as `\\uXXXX` (or a `/` as `\\/`)
    where `escape` says so, else as Python's encoder writes it."""
    spelled = []
    for index, char in enumerate(text):
        if not escape[index % len(escape)]:
            spelled.append(json.dumps(char, ensure_ascii=False)[1:-1])
        elif char == "/" and index % 2:
            spelled.append("\\/")
        else:
            units = char.encode("utf-16-be", "surrogatepass")
            spelled.extend(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))
    return "".join(spelled)


def strings_in(value: object) -> list[str]:
    """Every string in decoded JSON, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in strings_in(item)]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in (key, *strings_in(item))]
    return []


@settings(max_examples=300)
@given(
    secret=st.text(min_size=1, max_size=40).filter(lambda s: "*" not in s and s.strip() == s),
    escape=st.lists(st.booleans(), min_size=1, max_size=8),
)
def test_a_secret_json_escaped_any_way_is_masked_once_decoded(
    secret: str, escape: list[bool]
) -> None:
    """However a JSON answer escapes a secret (any of its characters as `\\uXXXX`, a `/`
    as `\\/`), neither its detail nor any of its values written out holds it; the body
    itself is what the server said."""
    from bulk_issuer.client import Answer, _parse, mask

    def hide(text: str) -> str:
        return mask(text, [secret])

    spelled = json_spelled(secret, escape)
    raw = '{"detail": [{"loc": ["body", "%s"], "msg": "token %s refused"}], "%s": 1}' % (
        (spelled,) * 3
    )
    answer = Answer(422, _parse(raw), {}, hide)
    assert answer.body == json.loads(raw)
    assert secret not in answer.detail
    assert repr(answer) == "Answer(status=422)"  # no body, no headers
    for text in strings_in(answer.body):
        assert secret not in answer.shown(text, 1000)
    assert secret not in answer.shown(answer.body, 10_000)


def test_detail_masks_a_secret_its_own_tidying_joins() -> None:
    """A password with a line break in it, echoed over two lines, or with markup that the
    HTML tidying drops: the detail is masked after the tidying too."""
    from bulk_issuer.client import Answer, mask

    for secret, body in [("two words", "refused: two\n  words"), ("a b", "<p>a<br>b</p>")]:
        answer = Answer(401, body, {}, functools.partial(mask, secrets=[secret]))
        assert secret not in answer.detail


@pytest.mark.parametrize(
    "escaped",
    [
        "it&#39;s &#34;my&#34; pass",  # markupsafe (Jinja2, Flask)
        "it&#039;s &quot;my&quot; pass",  # PHP's htmlspecialchars
        "it&apos;s &quot;my&quot; pass",  # XML
        "it&#x27;s &quot;my&quot; pass",  # Python's html.escape
    ],
)
@pytest.mark.parametrize("page", [True, False])
def test_a_secret_html_escaped_as_templates_do_is_masked(escaped: str, page: bool) -> None:
    """A password with quotes, echoed by a login page the way common templates escape it:
    masked as text, and in the detail read from a page's title."""
    from bulk_issuer.client import Answer, _parse, mask

    secret = 'it\'s "my" pass'

    def hide(text: str) -> str:
        return mask(text, [secret])

    raw = (
        f"<html><head><title>Login refused for {escaped}</title></head></html>"
        if page
        else f"login refused: password={escaped}"
    )
    answer = Answer(401, _parse(raw), {}, hide)
    assert answer.body == raw
    assert secret not in answer.detail
    assert escaped not in answer.shown(answer.body, 1000)
    assert escaped not in answer.detail


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300)
@given(value=JSON, loc=JSON, msg=JSON, status=st.integers(100, 599))
def test_any_json_answer_has_a_readable_detail(
    value: object, loc: object, msg: object, status: int
) -> None:
    """Whatever the JSON's shape (a `loc` that is null or a number, items that are not
    objects, a `msg` that is not a string), the detail is a line of at most 300
    characters; it never raises."""
    from bulk_issuer.client import Answer, _parse

    bodies = [
        value,
        {"detail": value},
        {"detail": [value, {"loc": loc, "msg": msg, "type": "value_error"}]},
        {"detail": [{"loc": loc}, {"msg": msg}]},
    ]
    for body in bodies:
        for answer in (Answer(status, body, {}), Answer(status, _parse(json.dumps(body)), {})):
            detail = answer.detail
            assert isinstance(detail, str)
            assert 0 < len(detail) <= 300
            assert "\n" not in detail


@pytest.mark.parametrize(
    ("problems", "expected"),
    [
        ([{"loc": None, "msg": "value is not valid"}], "value is not valid"),
        ([{"loc": 3, "msg": "value is not valid"}], "3: value is not valid"),
        (
            [{"loc": "email", "msg": "bad"}, {"loc": ["body", 0, "x"], "msg": "no"}],
            "email: bad; 0.x: no",
        ),
        (["first", 2, None], "first; 2"),
        ([{"loc": ["body", "email"], "msg": {"en": "bad"}}], 'email: {"en":"bad"}'),
        (
            [{"loc": ["body", "email"], "type": "missing"}],
            'email: {"loc":["body","email"],"type":"missing"}',
        ),
        ({"message": "no"}, '{"message":"no"}'),
    ],
)
def test_a_validation_list_of_any_shape_reads_as_one_line(problems: object, expected: str) -> None:
    """FastAPI's validation list, and what other servers put in its place."""
    from bulk_issuer.client import Answer

    assert Answer(422, {"detail": problems}, {}).detail == expected


@pytest.mark.parametrize(
    "page",
    [
        "<html><title>" * 300_000,  # every <title> opens, none closes
        ">" + "<" * 1_000_000,  # every < opens a tag, none closes
        "<p " * 400_000 + ">",
    ],
)
def test_the_detail_of_a_huge_page_is_read_in_one_pass(page: str) -> None:
    """Pages built so that a backtracking pattern rescans them from every `<`: read in a
    time that grows with the page, not with its square (hours for these 1-4 MB pages)."""
    from bulk_issuer.client import Answer

    started = time.perf_counter()
    detail = Answer(400, page, {}).detail
    assert time.perf_counter() - started < 5.0
    assert 0 < len(detail) <= 300


def test_a_login_token_echoed_cut_short_is_masked() -> None:
    """A server that quotes the first characters of the token it refused, or aiohttp's own
    message quoting a header too long: no 12 characters of the token in a row remain."""
    from bulk_issuer.client import mask

    token = "opaque-session-token-" + "Q7x" * 7
    for text in (
        f"Could not validate token {token[:24]}...",
        f"Got more than 8190 bytes when reading: b'Bearer {token[:90]}",
    ):
        masked = mask(text, ["the-password", token])
        assert token[:12] not in masked
        assert "********" in masked


def test_a_token_with_an_unpaired_surrogate_is_refused_and_masked_without_error() -> None:
    """No header can carry half a character: the token is refused (the run stops with
    exit 4, as for a control character), and masking it never raises."""
    from bulk_issuer.auth import sendable
    from bulk_issuer.client import mask

    token = "SURROGATETOKENabc\ud800def"
    assert not sendable(token)
    assert sendable("token-\u00e9\u0085-ok")
    assert mask(f"refused {token}", [token]) == "refused ********"


def test_a_401_to_a_request_that_outlived_its_token_refreshes_again_up_to_three_times() -> None:
    """A resend held up past its fresh token's life is refreshed again, three times in all;
    a 401 that came back at once after a refresh is the caller's to judge."""
    retry = RequestRetry(POLICY, refreshable=True)
    late = [retry.step(401, outlived=True) for _ in range(4)]
    assert late == [Refresh(), Refresh(), Refresh(), Deliver()]
    retry = RequestRetry(POLICY, refreshable=True)
    assert [retry.step(401, outlived=True), retry.step(401)] == [Refresh(), Deliver()]
