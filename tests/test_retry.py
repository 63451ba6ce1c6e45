"""Answer classification, backoff bounds and the server's wait hints."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest
from multidict import CIMultiDict

from bulk_issuer.retry import RetryPolicy, Verdict, classify, retry_after


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.ISSUED),
        (201, Verdict.ISSUED),
        (400, Verdict.FAILED),
        (422, Verdict.FAILED),
        (401, Verdict.UNAUTHORIZED),
        (403, Verdict.FATAL),
        (404, Verdict.FATAL),
        (409, Verdict.HELD),
        (429, Verdict.RETRY),
        (503, Verdict.RETRY),
        (500, Verdict.AMBIGUOUS),
        (502, Verdict.AMBIGUOUS),
        (504, Verdict.AMBIGUOUS),
        (None, Verdict.AMBIGUOUS),
    ],
)
def test_classify(status: int | None, verdict: Verdict) -> None:
    """Each answer means what the design says."""
    assert classify(status) is verdict


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
    """X-RateLimit-Reset as an epoch timestamp or as seconds."""
    now = 1_700_000_000.0
    assert retry_after(CIMultiDict({"X-RateLimit-Reset": str(int(now) + 4)}), now=now) == 4.0
    assert retry_after(CIMultiDict({"X-RateLimit-Reset": "4"}), now=now) == 4.0


def test_no_hint() -> None:
    """Nothing said, nothing returned; garbage is ignored."""
    assert retry_after(CIMultiDict()) is None
    assert retry_after(CIMultiDict({"Retry-After": "soon"})) is None


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
