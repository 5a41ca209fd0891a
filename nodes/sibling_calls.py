"""Concurrent LLM calls of one node that stop together.

`asyncio.gather` hands the first error on and leaves the other awaitables running. Under run.py
they die when `asyncio.run` closes the loop; under `langgraph dev` the loop lives on, and so would
they, sending (and paying for) requests of a run that has already failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import TypeVar

T = TypeVar("T")


async def gather_or_cancel(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """The results in order, like `asyncio.gather`; the first error (or a cancellation) cancels the rest
    and is raised once they have stopped."""
    tasks = [asyncio.ensure_future(awaitable) for awaitable in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
