"""A deposed active never answers under its successor's epoch (issue 12, found from outside the project).

Real processes on the real cluster, a real cut with nftables: the active A runs an exclusive handler that
awaits 4 s; 0.3 s in, A is cut from every NATS node for 2 s; B takes over with a newer epoch; after the heal
A learns B's epoch from its watch, then A's handler returns. Before the fix A sent a *successful* reply stamped
with B's epoch (the reply header was shared state the watch rewrote). Now the outcome is withheld: the caller
gets ``LeaseLost`` with A's admission epoch and the newest epoch A knows, and a sticky call in flight at the
cut ends with a success from B, under B's epoch, with the same call id.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from waiting import wait_until_async

from aegis.harness.cluster.gids import allocate_gids
from aegis.harness.cluster.local import LocalCluster
from aegis.harness.cluster.processes import spawn
from aegis.harness.demo.services import BookRequest
from aegis.harness.faults.nemesis import Fault, Nemesis
from aegis.sdk import wire
from aegis.sdk.codec import decode
from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.errors import AegisError, LeaseLost, NotActive, error_from_wire
from aegis.sdk.rpc import CallContext, RpcClient
from aegis.sdk.single_active import SingleActiveService
from aegis.sdk.sticky import StickyClient

ROOT = Path(__file__).resolve().parent.parent
HOLD_MS = 4000
CUT_S = 2.0
IN_HANDLER_S = 0.3
"""How long after the two slow calls are sent the cut comes: by then both are in A's handler (a call reaches
it in milliseconds; A runs in another process, so nothing here can watch it arrive). The handler holds them
HOLD_MS, far past IN_HANDLER_S + CUT_S: they are still running when A is cut and when it is healed."""


class Instances:
    """Ledger instances as real processes (``python -m aegis.harness.demo serve-active``), each with its own gid so
    the nemesis can cut its traffic: the nemesis's :class:`~aegis.harness.faults.nemesis.InstanceControl`."""

    def __init__(self, urls: list[str], service: str, names: Sequence[str]) -> None:
        self.urls, self.service = urls, service
        self._gids = dict(zip(names, allocate_gids(len(names)), strict=True))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.active_name: str | None = None

    def start(self, name: str) -> None:
        args = [sys.executable, "-m", "aegis.harness.demo", "serve-active", "--instance", name]
        args += ["--service", self.service, *self.urls]
        proc = spawn(args, stdout=subprocess.PIPE, cwd=ROOT, group=self._gids[name])
        self.procs[name] = proc
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded: the child dies with a clear error if it cannot start
        assert line.strip() == b"ready", f"{name} did not start: {line!r}"

    def names(self) -> Sequence[str]:
        return list(self.procs)

    def active(self) -> str | None:
        return self.active_name

    def pid(self, name: str) -> int | None:
        p = self.procs.get(name)
        return p.pid if p is not None and p.poll() is None else None

    def gid(self, name: str) -> int | None:
        return self._gids[name]

    def kill(self, name: str) -> None:
        self.procs[name].kill()
        self.procs[name].wait(timeout=10)

    def signal(self, name: str, sig: int) -> None:
        self.procs[name].send_signal(sig)

    def restart(self, name: str) -> None:
        self.start(name)

    def close(self) -> None:
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


@pytest.fixture
def ledger(cluster: LocalCluster) -> Iterator[tuple[Instances, Nemesis]]:
    inst = Instances(cluster.urls, f"late{uuid.uuid4().hex[:8]}", ["A", "B"])
    nem = Nemesis(cluster, inst, seed=12)
    try:
        if nem.firewall is None:  # pragma: no cover - depends on the machine
            pytest.skip(f"nftables unavailable here: {nem.partition_unavailable}")
        inst.start("A")  # alone at first: A wins the election
        yield inst, nem
    finally:
        nem.close()
        inst.close()


async def _book(client: RpcClient, service: str, instance: str, hold_ms: int = 0, timeout: float = 1.0):
    """One direct ``book`` on ``instance``: (reply body, reply's Aegis-Epoch header)."""
    msg = await client.request(
        service, "book", BookRequest(ref="late", hold_ms=hold_ms), instance=instance, timeout=timeout
    )
    return decode(msg.data), int((msg.headers or {}).get(wire.EPOCH_HEADER, 0))


async def _active_epoch(client: RpcClient, service: str, instance: str, within_s: float) -> int:
    """Poll ``instance`` directly until it serves ``book``; its epoch (the header and the body agree).

    Its own loop, not ``waiting.wait_until_async``: each look is a call whose answer is returned, and the last
    error it met goes into the failure."""
    end = time.monotonic() + within_s
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            body, epoch = await _book(client, service, instance, timeout=0.3)
        except AegisError as exc:  # NotActive while standby, timeouts while the cluster settles
            last = exc
            await asyncio.sleep(0.02)
            continue
        assert body["epoch"] == epoch and body["instance"] == instance
        return epoch
    raise AssertionError(f"{instance} did not become active within {within_s}s (last: {last!r})")


async def test_deposed_active_withholds_a_late_outcome_and_sticky_retries_on_successor(
    ledger: tuple[Instances, Nemesis], nats_urls: list[str]
) -> None:
    inst, nem = ledger
    service = inst.service
    pool = await ConnectionPool.connect(load_settings(servers=nats_urls, name="late-reply-test"))
    sticky = StickyClient(pool, attempt_timeout_s=10.0)
    tasks: list[asyncio.Task[object]] = []
    try:
        client = RpcClient(pool)
        e1 = await _active_epoch(client, service, "A", 15)
        inst.active_name = "A"
        inst.start("B")
        with pytest.raises(NotActive):  # B is a standby that knows A's epoch
            await _book(client, service, "B")

        call_id = f"late-{uuid.uuid4().hex[:8]}"
        slow_direct = asyncio.create_task(_book(client, service, "A", hold_ms=HOLD_MS, timeout=15))
        slow_sticky = asyncio.create_task(
            sticky.call_active(
                service,
                "book",
                BookRequest(ref="sticky", hold_ms=HOLD_MS),
                timeout=20,
                idempotency_key=call_id,
            )
        )
        tasks += [slow_direct, slow_sticky]
        await asyncio.sleep(IN_HANDLER_S)  # both calls are running in A's handler now
        cut = await asyncio.to_thread(nem.apply, Fault("partition-instance", "A", peer="all"))
        assert cut is not None
        try:
            e2 = await _active_epoch(client, service, "B", CUT_S)  # B takes over while A is cut
        finally:
            await asyncio.sleep(max(0.0, CUT_S - (time.monotonic() - cut.applied.mono)))
            await asyncio.to_thread(nem.heal, cut)
        assert e2 > e1

        # A's handler returns after the heal, when A knows B's epoch: no success may come out of it.
        with pytest.raises(LeaseLost) as lost:
            body, header = await slow_direct
            pytest.fail(f"A answered after it was deposed: body {body}, Aegis-Epoch {header} (B has {e2})")
        assert lost.value.epoch == e1, "a LeaseLost names the epoch the call was admitted under"
        assert lost.value.known_epoch == e2, "A learnt B's epoch before its handler returned"

        # The sticky call that was in flight at A ends on B, under B's epoch, with the same call id.
        reply = await slow_sticky
        assert reply == {"instance": "B", "epoch": e2, "call_id": call_id}

        # And A, a standby now, refuses new exclusive calls with the epoch it knows.
        with pytest.raises(NotActive) as refused:
            await _book(client, service, "A", timeout=2.0)
        assert refused.value.epoch == e2
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sticky.close()
        await pool.close()


# -- in process: the admission epoch, still_serving() and the withheld outcome, with a graceful hand-over --


async def test_outcome_after_a_handover_is_withheld_and_context_carries_the_admission_epoch(
    nats_urls: list[str],
) -> None:
    pool = await ConnectionPool.connect(load_settings(servers=nats_urls, name="late-reply-inproc"))
    name = f"late{uuid.uuid4().hex[:8]}"
    entered, release = asyncio.Event(), asyncio.Event()
    seen: list[tuple[int, bool, bool]] = []  # (ctx.epoch, still_serving at entry, still_serving at the end)

    def make(instance_id: str) -> SingleActiveService:
        svc = SingleActiveService(name, instance_id=instance_id)

        @svc.exclusive_rpc("book")
        async def book(req: int, ctx: CallContext) -> int:
            at_entry = ctx.still_serving()
            if req:  # a slow call: wait until the test has handed the lease over
                entered.set()
                await release.wait()
            seen.append((ctx.epoch, at_entry, ctx.still_serving()))
            return ctx.epoch

        @svc.rpc("whoami")
        async def whoami(req: None, ctx: CallContext) -> tuple[int, bool]:
            return ctx.epoch, ctx.still_serving()

        return svc

    a, b = make("a"), make("b")
    client = RpcClient(pool)
    slow: asyncio.Future[object] | None = None
    try:
        await a.start(pool)
        await wait_until_async(lambda: a.is_active, 5, "a to become active")
        await b.start(pool)
        e1 = a.election.epoch
        msg = await client.request(name, "book", 0, instance="a")
        assert decode(msg.data) == e1 and msg.headers[wire.EPOCH_HEADER] == str(e1)
        assert seen.pop() == (e1, True, True)
        # not exclusive: no admission epoch, nothing to fence
        assert await client.call(name, "whoami", instance="b") == [0, True]

        slow = asyncio.create_task(client.request(name, "book", 1, instance="a", timeout=10))
        await asyncio.wait_for(entered.wait(), 5)
        stop = asyncio.create_task(a.stop(grace_s=10))  # hands the key over while the call runs
        await wait_until_async(lambda: b.is_active, 5, "b to take the handed-over key")
        assert b.election.epoch > e1
        release.set()
        with pytest.raises(LeaseLost) as lost:
            await slow
        # A released the key and stopped watching it: the newest epoch it knows may still be its own
        assert lost.value.epoch == e1 and lost.value.known_epoch >= e1
        assert seen.pop() == (e1, True, False), "still_serving() turned False once the lease was gone"
        await stop
    finally:
        release.set()
        if slow is not None:
            await asyncio.gather(slow, return_exceptions=True)
        for svc in (a, b):
            await svc.stop()
        await pool.close()


def test_lease_lost_travels_with_both_epochs() -> None:
    err = error_from_wire(LeaseLost.code, "lost", 7, 9)
    assert isinstance(err, LeaseLost) and (err.epoch, err.known_epoch, err.code) == (7, 9, 410)
    assert not isinstance(error_from_wire(NotActive.code, "standby", 7), LeaseLost)
