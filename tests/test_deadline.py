"""The one deadline rule (``aegis.sdk.deadline.effective_timeout``), shared by RpcClient and DiscoveryClient.

No NATS needed: the rule is applied before anything is sent, so a pool that only carries settings will do.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from aegis.sdk.config import AegisSettings
from aegis.sdk.deadline import SERVING_CALL, effective_timeout
from aegis.sdk.discovery import DiscoveryClient
from aegis.sdk.errors import DeadlineExceeded
from aegis.sdk.rpc import CallContext, RpcClient, current_call


def _pool() -> Any:
    settings = AegisSettings(rpc_timeout_s=2.0, method_timeouts={"calc.slow": 7.0})
    return SimpleNamespace(settings=settings, max_payload=1024 * 1024)


@contextmanager
def _serving(remaining: float) -> Iterator[CallContext]:
    ctx = CallContext("outer", "m", "i1", "", time.monotonic() + remaining)
    token = SERVING_CALL.set(ctx)
    try:
        yield ctx
    finally:
        SERVING_CALL.reset(token)


def test_outside_a_handler_the_timeout_is_the_given_or_configured_one() -> None:
    pool = _pool()
    assert effective_timeout(pool, "calc", "add", 0.5) == 0.5
    assert effective_timeout(pool, "calc", "add") == 2.0
    assert effective_timeout(pool, "calc", "slow") == 7.0


def test_inside_a_handler_the_handlers_remaining_time_caps_it() -> None:
    pool = _pool()
    with _serving(1.0) as ctx:
        assert current_call() is ctx
        assert 0.9 < effective_timeout(pool, "calc", "slow") <= 1.0
        assert effective_timeout(pool, "calc", "add", 0.25) == 0.25
    assert current_call() is None


async def test_rpc_and_discovery_refuse_a_call_when_the_handler_has_no_time_left() -> None:
    pool = _pool()
    with _serving(-0.01):
        with pytest.raises(DeadlineExceeded, match="no time left to call calc.add"):
            effective_timeout(pool, "calc", "add")
        with pytest.raises(DeadlineExceeded, match="no time left to call calc.add"):
            await RpcClient(pool).call("calc", "add", {"a": 1})
        with pytest.raises(DeadlineExceeded, match="no time left to call calc.add"):
            await DiscoveryClient(pool).call("calc", "add", {"a": 1})
