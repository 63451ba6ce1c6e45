"""The per-learner state machine from tables: what it is told, what it answers. No network."""

from __future__ import annotations

from typing import Any

import pytest

from bulk_issuer.flow import Finish, LearnerFlow, Lookup, Send, Stop, Verify, Wait
from bulk_issuer.outcomes import Status

HELD = Lookup(True, "a-1")
NOT_HELD = Lookup(False)
CANNOT_TELL = Lookup(None, why="the assertions list answered HTTP 403: Forbidden")

#: One input to the flow: ("start",), ("answered", status, detail, {kw}), ("no_answer", why),
#: ("looked_up", Lookup).
Step = tuple[Any, ...]


def flow(**kw: Any) -> LearnerFlow:
    """A flow with three attempts and a backoff that says which wait it is (n seconds)."""
    return LearnerFlow(attempts=kw.pop("attempts", 3), backoff=float, **kw)


def feed(machine: LearnerFlow, step: Step) -> Any:
    """Give the flow one input; its next action."""
    what, *args = step
    if what == "start":
        return machine.start()
    if what == "answered":
        status, detail, *rest = args
        return machine.answered(status, detail, **(rest[0] if rest else {}))
    if what == "no_answer":
        return machine.no_answer(args[0], **(args[1] if len(args) > 1 else {}))
    assert what == "looked_up"
    return machine.looked_up(args[0])


def run(machine: LearnerFlow, steps: list[Step]) -> list[Any]:
    """The action after each input."""
    return [feed(machine, step) for step in steps]


# -- one answer to one send ------------------------------------------------------------------

ISSUED_KW = {"assertion_id": "a-9"}


@pytest.mark.parametrize(
    ("status", "detail", "kw", "expected"),
    [
        (200, "OK", ISSUED_KW, Finish(Status.ISSUED, 200, None, "a-9")),
        (201, "Created", {}, Finish(Status.ISSUED, 201)),
        (
            409,
            "Recipient already has this badge",
            {},
            Verify("HTTP 409 (Recipient already has this badge): does the learner hold the badge?"),
        ),
        (
            409,
            "Badge is archived",
            {},
            Verify("HTTP 409 (Badge is archived): does the learner hold the badge?"),
        ),
        (
            404,
            "Provider not found",
            {"badge_confirmed": True},
            Finish(Status.FAILED, 404, "Provider not found"),
        ),
        (
            429,
            "Too Many Requests",
            {},
            Finish(Status.FAILED, 429, "rate limited too often: Too Many Requests"),
        ),
        (
            503,
            "Service Unavailable",
            {},
            Finish(Status.FAILED, 503, "unavailable too often: Service Unavailable"),
        ),
        (302, "Found", {}, Finish(Status.FAILED, 302, "unexpected redirect: Found")),
        (400, "bad body", {}, Finish(Status.FAILED, 400, "bad body")),
        (422, "recipient_email: bad", {}, Finish(Status.FAILED, 422, "recipient_email: bad")),
        (500, "boom", {}, Verify("HTTP 500: was it issued?")),
        (
            200,
            "Sign in",
            {"assertion": False},
            Verify("HTTP 200 without the assertion (Sign in): was it issued?"),
        ),
        (
            204,
            "HTTP 204",
            {"assertion": False},
            Verify("HTTP 204 without the assertion: was it issued?"),
        ),
        (502, "Bad Gateway", {}, Verify("HTTP 502: was it issued?")),
        (504, "Gateway Time-out", {}, Verify("HTTP 504: was it issued?")),
    ],
)
def test_one_answer(status: int, detail: str, kw: dict[str, Any], expected: object) -> None:
    """Each answer to a first send leads where the diagram says."""
    machine = flow()
    assert machine.start() == Send()
    assert machine.answered(status, detail, **kw) == expected


@pytest.mark.parametrize(
    ("status", "kw", "message", "reason"),
    [
        (
            401,
            {},
            "the server refused the credentials (HTTP 401): nope",
            "not issued: the server refused the credentials (HTTP 401): nope",
        ),
        (
            403,
            {},
            "is not permitted for these credentials (HTTP 403): nope",
            "not issued: the badge is not permitted for these credentials (HTTP 403): nope",
        ),
        (
            403,
            {"badge_confirmed": True},
            "is not permitted for these credentials (HTTP 403): nope",
            "not issued: the badge is not permitted for these credentials (HTTP 403): nope",
        ),
        (
            404,
            {},
            "is not found (HTTP 404): nope",
            "not issued: the badge is not found (HTTP 404): nope",
        ),
    ],
)
def test_answers_that_stop_the_run(
    status: int, kw: dict[str, Any], message: str, reason: str
) -> None:
    """401, 403 and a 404 before the badge is confirmed stop the run; the learner was not issued."""
    action = flow().answered(status, "nope", **kw)
    assert action == Finish(Status.NOT_ATTEMPTED, status, reason, stop=Stop(message, status))


# -- sequences -------------------------------------------------------------------------------

SEQUENCES: list[tuple[str, dict[str, Any], list[Step], list[Any]]] = [
    (
        "an earlier run's send is verified first, and found issued",
        {"verify_first": True},
        [("start",), ("looked_up", HELD)],
        [
            Verify("an earlier run's send went unanswered"),
            Finish(Status.ISSUED, None, None, "a-1", ("verified",)),
        ],
    ),
    (
        "an earlier run's send not processed: sent now without a wait",
        {"verify_first": True},
        [("start",), ("looked_up", NOT_HELD), ("answered", 201, "Created")],
        [Verify("an earlier run's send went unanswered"), Send(), Finish(Status.ISSUED, 201)],
    ),
    (
        "an earlier run's send cannot be checked: unconfirmed, not resent",
        {"verify_first": True},
        [("start",), ("looked_up", CANNOT_TELL)],
        [
            Verify("an earlier run's send went unanswered"),
            Finish(
                Status.UNCONFIRMED,
                None,
                "a send went unanswered and the server could not be asked whether it was "
                "issued (the assertions list answered HTTP 403: Forbidden); not sent again",
            ),
        ],
    ),
    (
        "a 2xx page, not the assertion, and the server cannot be asked: unconfirmed",
        {},
        [
            ("start",),
            ("answered", 200, "Sign in", {"assertion": False}),
            ("looked_up", CANNOT_TELL),
        ],
        [
            Send(),
            Verify("HTTP 200 without the assertion (Sign in): was it issued?"),
            Finish(
                Status.UNCONFIRMED,
                200,
                "the send got HTTP 200 without the assertion (Sign in) and the server could "
                "not be asked whether it was issued (the assertions list answered HTTP 403: "
                "Forbidden); not sent again",
            ),
        ],
    ),
    (
        "a 2xx page, not the assertion, and the server has it not: sent again, issued",
        {},
        [
            ("start",),
            ("answered", 200, "Sign in", {"assertion": False}),
            ("looked_up", NOT_HELD),
            ("answered", 200, "OK"),
        ],
        [
            Send(),
            Verify("HTTP 200 without the assertion (Sign in): was it issued?"),
            Wait(1.0, "retry after an unanswered send", Send()),
            Finish(Status.ISSUED, 200),
        ],
    ),
    (
        "an earlier run's send cannot be checked, resending allowed: sent, flagged",
        {"verify_first": True, "resend_unconfirmed": True},
        [("start",), ("looked_up", CANNOT_TELL), ("answered", 200, "OK")],
        [
            Verify("an earlier run's send went unanswered"),
            Send(),
            Finish(Status.ISSUED, 200, flags=("resent_unverified",)),
        ],
    ),
    (
        "no answer, then the lookup finds it: issued, verified, with the dropped send's status",
        {},
        [("start",), ("no_answer", "dropped"), ("looked_up", HELD)],
        [
            Send(),
            Verify("dropped: was it issued?"),
            Finish(Status.ISSUED, None, None, "a-1", ("verified",)),
        ],
    ),
    (
        "a 500 after commit, found by the lookup: issued, verified, http_status 500",
        {},
        [("start",), ("answered", 500, "boom"), ("looked_up", HELD)],
        [
            Send(),
            Verify("HTTP 500: was it issued?"),
            Finish(Status.ISSUED, 500, None, "a-1", ("verified",)),
        ],
    ),
    (
        "no answer, not held: wait the first backoff, send again, issued",
        {},
        [("start",), ("no_answer", "dropped"), ("looked_up", NOT_HELD), ("answered", 200, "OK")],
        [
            Send(),
            Verify("dropped: was it issued?"),
            Wait(1.0, "retry after an unanswered send", Send()),
            Finish(Status.ISSUED, 200),
        ],
    ),
    (
        "no answer and the lookup cannot tell: unconfirmed, not resent",
        {},
        [("start",), ("no_answer", "timed out"), ("looked_up", CANNOT_TELL)],
        [
            Send(),
            Verify("timed out: was it issued?"),
            Finish(
                Status.UNCONFIRMED,
                None,
                "a send went unanswered and the server could not be asked whether it was "
                "issued (the assertions list answered HTTP 403: Forbidden); not sent again",
            ),
        ],
    ),
    (
        "a 502 and the lookup cannot tell: unconfirmed with the 502",
        {},
        [("start",), ("answered", 502, "Bad Gateway"), ("looked_up", CANNOT_TELL)],
        [
            Send(),
            Verify("HTTP 502: was it issued?"),
            Finish(
                Status.UNCONFIRMED,
                502,
                "a send went unanswered and the server could not be asked whether it was "
                "issued (the assertions list answered HTTP 403: Forbidden); not sent again",
            ),
        ],
    ),
    (
        "no answer, cannot tell, resending allowed: waits, resends, flagged once",
        {"resend_unconfirmed": True},
        [
            ("start",),
            ("no_answer", "dropped"),
            ("looked_up", CANNOT_TELL),
            ("no_answer", "dropped"),
            ("looked_up", CANNOT_TELL),
            ("answered", 200, "OK"),
        ],
        [
            Send(),
            Verify("dropped: was it issued?"),
            Wait(1.0, "retry after an unanswered send", Send()),
            Verify("dropped: was it issued?"),
            Wait(2.0, "retry after an unanswered send", Send()),
            Finish(Status.ISSUED, 200, flags=("resent_unverified",)),
        ],
    ),
    (
        "three unanswered sends, none processed: failed after the last",
        {},
        [
            ("start",),
            ("no_answer", "dropped"),
            ("looked_up", NOT_HELD),
            ("answered", 504, "Gateway Time-out"),
            ("looked_up", NOT_HELD),
            ("no_answer", "reset by peer"),
            ("looked_up", NOT_HELD),
        ],
        [
            Send(),
            Verify("dropped: was it issued?"),
            Wait(1.0, "retry after an unanswered send", Send()),
            Verify("HTTP 504: was it issued?"),
            Wait(2.0, "retry after an unanswered send", Send()),
            Verify("reset by peer: was it issued?"),
            Finish(Status.FAILED, None, "gave up after 3 unanswered attempts: reset by peer"),
        ],
    ),
    (
        "out of attempts while resending unconfirmed: failed, flagged",
        {"attempts": 1, "resend_unconfirmed": True},
        [("start",), ("answered", 500, "boom"), ("looked_up", CANNOT_TELL)],
        [
            Send(),
            Verify("HTTP 500: was it issued?"),
            Finish(
                Status.FAILED,
                500,
                "gave up after 1 unanswered attempts: boom",
                flags=("resent_unverified",),
            ),
        ],
    ),
    (
        "unanswered sends during an outage do not use up the attempts; others do",
        {"attempts": 1},
        [
            ("start",),
            ("no_answer", "dropped", {"outage": True}),
            ("looked_up", NOT_HELD),
            ("answered", 502, "Bad Gateway", {"outage": True}),
            ("looked_up", NOT_HELD),
            ("no_answer", "dropped"),
            ("looked_up", NOT_HELD),
        ],
        [
            Send(),
            Verify("dropped: was it issued?"),
            Wait(1.0, "retry after an unanswered send", Send()),
            Verify("HTTP 502: was it issued?"),
            Wait(2.0, "retry after an unanswered send", Send()),
            Verify("dropped: was it issued?"),
            Finish(Status.FAILED, None, "gave up after 3 unanswered attempts: dropped"),
        ],
    ),
    (
        "a 409 that does not say held, and the lookup finds it: already held",
        {},
        [("start",), ("answered", 409, "Conflict"), ("looked_up", HELD)],
        [
            Send(),
            Verify("HTTP 409 (Conflict): does the learner hold the badge?"),
            Finish(Status.HELD, 409, "Conflict", "a-1"),
        ],
    ),
    (
        "409 'Badge is archived' and not held: failed with the detail",
        {},
        [("start",), ("answered", 409, "Badge is archived"), ("looked_up", NOT_HELD)],
        [
            Send(),
            Verify("HTTP 409 (Badge is archived): does the learner hold the badge?"),
            Finish(Status.FAILED, 409, "Badge is archived"),
        ],
    ),
    (
        "an unexplained 409 the lookup cannot check: failed with the detail, never resent",
        {"resend_unconfirmed": True},
        [("start",), ("answered", 409, "Badge is archived"), ("looked_up", CANNOT_TELL)],
        [
            Send(),
            Verify("HTTP 409 (Badge is archived): does the learner hold the badge?"),
            Finish(Status.FAILED, 409, "Badge is archived"),
        ],
    ),
    (
        "after a 409 was settled, a later verify is about sends again",
        {"verify_first": True},
        [
            ("start",),
            ("looked_up", NOT_HELD),
            ("answered", 409, "Conflict"),
            ("looked_up", NOT_HELD),
        ],
        [
            Verify("an earlier run's send went unanswered"),
            Send(),
            Verify("HTTP 409 (Conflict): does the learner hold the badge?"),
            Finish(Status.FAILED, 409, "Conflict"),
        ],
    ),
    (
        "a 404 after a resend, once the badge is confirmed: fails only this learner",
        {},
        [
            ("start",),
            ("no_answer", "dropped"),
            ("looked_up", NOT_HELD),
            ("answered", 404, "Provider not found", {"badge_confirmed": True}),
        ],
        [
            Send(),
            Verify("dropped: was it issued?"),
            Wait(1.0, "retry after an unanswered send", Send()),
            Finish(Status.FAILED, 404, "Provider not found"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("kw", "steps", "expected"),
    [pytest.param(kw, steps, expected, id=name) for name, kw, steps, expected in SEQUENCES],
)
def test_sequence(kw: dict[str, Any], steps: list[Step], expected: list[Any]) -> None:
    """Each series of inputs gives the actions of the table, in order."""
    assert run(flow(**kw), steps) == expected


def test_the_held_409_wording() -> None:
    """Every 409 is looked up. Held where the list shows it; where the list cannot tell,
    only wordings that say the learner already has it count as held; where the list shows
    it not held, none does (a learner never silently goes without the badge)."""
    held = [
        "Recipient already has this badge",
        "already issued",
        "Already awarded to this user",
        "assertion already exists",
        "User has already been issued this badge",
        "Duplicate assertion",
        "user ALREADY HOLDS it",
    ]
    other = [
        "Badge is archived",
        "Conflict",
        "Badge is not active",
        "HTTP 409",
        "This badge has already been archived",
        "duplicate provider_id in request",
    ]
    for detail in held + other:
        for lookup, status in [
            (HELD, Status.HELD),
            (CANNOT_TELL, Status.HELD if detail in held else Status.FAILED),
            (NOT_HELD, Status.FAILED),
        ]:
            machine = flow()
            assert isinstance(machine.answered(409, detail), Verify), detail
            action = machine.looked_up(lookup)
            assert isinstance(action, Finish)
            assert (action.status, action.http_status) == (status, 409), (detail, lookup)
            assert detail in (action.reason or "")


def test_no_finish_is_issued_without_a_2xx_or_a_lookup() -> None:
    """Whatever sequence of non-2xx answers (or of 2xx pages that are not the assertion),
    `issued` needs a lookup that found it."""
    for status, assertion in [(s, True) for s in (400, 409, 422, 500, 502, 504)] + [(200, False)]:
        machine = flow(attempts=1)
        action = machine.answered(status, "x", assertion=assertion)
        while isinstance(action, Verify):
            action = machine.looked_up(NOT_HELD)
        assert isinstance(action, Finish)
        assert action.status is not Status.ISSUED
