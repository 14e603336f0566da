"""The async client's turns (``client.turns``): the bound, renewals first, no starvation."""

from __future__ import annotations

import asyncio

import pytest

from node_registry.client.turns import URGENT_RUN, Turns


async def _queue(turns: Turns, kinds: str, order: list[str]) -> list[asyncio.Task[None]]:
    """A waiter per letter of ``kinds`` (``u``: urgent, ``o``: other), each noting its name
    in ``order`` when it gets a turn, and handing it back at once."""

    async def wait(name: str) -> None:
        await turns.acquire(urgent=name.startswith("u"))
        order.append(name)
        turns.release()

    tasks = [asyncio.create_task(wait(f"{k}{i}")) for i, k in enumerate(kinds)]
    await asyncio.sleep(0)  # each up to its wait
    return tasks


def test_renewals_go_first_but_never_starve_the_rest() -> None:
    async def main() -> list[str]:
        turns = Turns(1)
        await turns.acquire()  # the one turn, held
        order: list[str] = []
        tasks = await _queue(turns, "oo" + "u" * (2 * URGENT_RUN + 1), order)
        assert turns.in_use == 1
        turns.release()
        await asyncio.gather(*tasks)
        assert turns.in_use == 0
        return order

    order = asyncio.run(main())
    urgent = [f"u{i}" for i in range(2, 2 * URGENT_RUN + 3)]
    assert order == [
        *urgent[:URGENT_RUN],
        "o0",
        *urgent[URGENT_RUN : 2 * URGENT_RUN],
        "o1",
        *urgent[2 * URGENT_RUN :],
    ]


def test_at_most_limit_turns_are_out_and_a_waiter_that_gives_up_passes_its_place_on() -> None:
    async def main() -> None:
        turns = Turns(2)
        await turns.acquire()
        await turns.acquire()
        order: list[str] = []
        late = asyncio.create_task(turns.acquire(urgent=True))
        tasks = await _queue(turns, "ou", order)
        late.cancel()  # its timeout: it leaves the queue
        with pytest.raises(asyncio.CancelledError):
            await late
        turns.release()
        await asyncio.gather(*tasks)
        assert order == ["u1", "o0"]
        assert turns.in_use == 1

        # Handed a turn in the same moment it gave up: the turn goes on to the next waiter.
        await turns.acquire()  # both turns out again
        waiter = asyncio.create_task(turns.acquire())
        next_ = asyncio.create_task(turns.acquire())
        await asyncio.sleep(0)
        turns.release()  # waiter's turn, not yet taken up...
        waiter.cancel()  # ...when it is cancelled
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await asyncio.wait_for(next_, 5)  # it would wait for good
        assert turns.in_use == 2

    asyncio.run(main())
