"""Bounded waits for tests: look at a condition until it holds; fail the test when it does not in time.

A test that waits for something to happen waits for that, not for a fixed time: it goes on as soon as the
condition holds and fails with what it waited for when the bound passes.

Imported as ``from waiting import wait_until, wait_until_async``: tests/ is no package, and pytest puts it on
``sys.path`` when it collects a test file from it (its default "prepend" import mode), as it does for
``unfenced_instance``; this works for ``pytest tests`` and ``python -m pytest tests`` alike.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

import pytest

STEP_S = 0.05
"""Default pause between two looks at the condition."""


def wait_until(pred: Callable[[], object], timeout: float, what: str, step: float = STEP_S) -> float:
    """Call ``pred`` every ``step`` s until it returns something true; the seconds that took.

    Fails the test with ``timed out after {timeout} s waiting for {what}`` when it is still false after
    ``timeout`` s. It is looked at once more after the bound passed, so a condition that holds at the bound is
    never reported as timed out.
    """
    __tracebackhide__ = True
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - t0


async def wait_until_async(
    pred: Callable[[], object | Awaitable[object]], timeout: float, what: str, step: float = STEP_S
) -> float:
    """:func:`wait_until` on the event loop: ``pred`` may be a plain function or a coroutine function (a query
    to the server), and the loop keeps running between two looks."""
    __tracebackhide__ = True
    t0 = time.monotonic()
    while not await _value(pred()):
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(step)
    return time.monotonic() - t0


async def _value(value: object | Awaitable[object]) -> object:
    return await value if inspect.isawaitable(value) else value
