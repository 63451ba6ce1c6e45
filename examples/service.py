"""Issue badges as course completions arrive: a long-lived issuer fed by a queue.

    NAVIGATR_BASE_URL=http://127.0.0.1:8765 NAVIGATR_PAT=sandbox-demo-pat \
        python examples/service.py

In a real service the webhook handler puts each completion on the queue and returns at
once; a few consumer tasks share one `BadgeIssuer`, so they share its pacer (the server's
rate limit is kept across all of them), its token, its connections and its journal. A
completion delivered twice (webhooks retry) is issued once: the second delivery comes
back `skipped` without a request, or shares the first one's result if it is still on
the wire.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

import bulk_issuer


@dataclass(frozen=True)
class Completion:
    """What the LMS's course-completion webhook tells us."""

    first_name: str
    last_name: str
    email: str
    badge_id: int


async def consume(issuer: bulk_issuer.BadgeIssuer, queue: asyncio.Queue[Completion]) -> None:
    """Issue each completion taken from the queue, one at a time, for ever."""
    while True:
        completion = await queue.get()
        try:
            learner = bulk_issuer.Learner(
                first_name=completion.first_name,
                last_name=completion.last_name,
                email=completion.email,
            )
            outcome = await issuer.issue(learner, badge_id=completion.badge_id)
            print(f"{outcome.email}: {outcome.status}")
        except bulk_issuer.InputError as exc:
            print(f"{completion.email}: not issued, {exc}")
        finally:
            queue.task_done()


async def main() -> None:
    """Start the issuer and its consumers, feed them completions, wait until all are done."""
    auth = bulk_issuer.PersonalAccessToken(os.environ["NAVIGATR_PAT"])
    base_url = os.environ.get("NAVIGATR_BASE_URL", bulk_issuer.DEFAULT_BASE_URL)
    queue: asyncio.Queue[Completion] = asyncio.Queue()
    async with bulk_issuer.BadgeIssuer(
        auth=auth, base_url=base_url, journal="service.db"
    ) as issuer:
        consumers = [asyncio.create_task(consume(issuer, queue)) for _ in range(4)]
        # What the webhook would put on the queue; the last one is a repeated delivery.
        for completion in [
            Completion("Amara", "Okafor", "amara.okafor@example.org", 51),
            Completion("Björn", "Lindqvist", "bjorn.lindqvist@example.org", 51),
            Completion("Priya", "Natarajan", "priya.natarajan@example.com", 3425),
            Completion("Ada", "Lovelace", "not-an-address", 51),
            Completion("Amara", "Okafor", "amara.okafor@example.org", 51),
        ]:
            queue.put_nowait(completion)
        await queue.join()
        for consumer in consumers:
            consumer.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
