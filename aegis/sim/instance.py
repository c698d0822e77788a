"""One simulated instance: a process that drives the SDK's own election state machine (:mod:`aegis.sdk.election`).

This is the simulator's counterpart of :class:`aegis.sdk.single_active.SingleActiveService`'s driver: it feeds the
machine events stamped with the instance's **own** clock, carries out the actions it returns, and logs every
step with exactly the trace events the SDK driver writes (so simulated runs can be trace-checked). The protocol
itself is not here: the machine is whatever ``machine_factory`` builds (``aegis.sdk.election.Election`` by default; the
negative controls inject broken subclasses).

The process model:

* a monotonic clock ``local = offset + rate * t`` with its own rate (within ``1 +/- drift`` unless a negative
  control says otherwise);
* crash (kill -9: state lost, requests in flight may still land, their answers are lost), restart (a new
  machine, a new watch, a read of the key), graceful stop;
* pauses (SIGSTOP, GC): the clock runs on, nothing is processed; answers, watch deliveries, timers and client
  calls queue up and are handled in order when it resumes;
* one request at a time (the machine's rule), each with a network delay each way; a request that has no answer
  after ``write_timeout_s`` on the local clock times out (like ``kv_write``'s timeout in the SDK).

:class:`SimProcess` is that process model, whatever the machine: the clock, the lifecycle, the pause queue, the
timer and the client calls (fenced by the machine's own ``reply_epoch``). :class:`SimInstance` adds the
single-bucket lease's I/O (one key, one watch, one request in flight); :mod:`aegis.sim.quorum_instance` adds the
quorum lease's (three buckets, one write in flight per bucket, a connection to one NATS node).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aegis.sdk.election import (
    Effect,
    Election,
    ElectionParams,
    Exit,
    Probe,
    StartServing,
    StopServing,
    Timer,
    TraceStep,
    Write,
    holds_own_record,
)
from aegis.sdk.kv_types import KeyState
from aegis.sdk.trace_events import Action as TA
from aegis.sim.kv import Entry, Watch, WriteAnswer

if TYPE_CHECKING:
    from aegis.sim.run import Simulation

MachineFactory = Callable[[ElectionParams], Election]
"""Builds the election state machine of one process (``Election`` or a subclass)."""

Handler = Callable[[float], list[Effect]]
Reply = Callable[[str, int, bool], None]
"""How an instance answers a call: ``(outcome, epoch, fenced)``; see :meth:`SimInstance.call`."""


class _InFlight:
    """The request this process's I/O layer waits on (what an awaiting ``kv_write`` is in the SDK)."""

    __slots__ = ("req", "sent")

    def __init__(self, req: int, sent: float) -> None:
        self.req = req
        self.sent = sent


class SimProcess:
    """The process model shared by the simulated instances of both elections; see the module docstring.

    A subclass sets ``machine`` (anything with ``serving``, ``epoch``, ``reply_epoch``, ``tick``, ``stop`` and
    ``crash``), starts the process (:meth:`start`), carries out the machine's effects (:meth:`_carry_out`, with
    the shared :meth:`_set_timer`, :meth:`_started`, :meth:`_stopped`) and closes its I/O in :meth:`_close`."""

    machine: Any

    def __init__(self, sim: Any, name: str, *, rate: float, offset: float) -> None:
        self.sim = sim
        self.env = sim.env
        self.name = name
        self.rate = rate
        self.offset = offset
        self.up = False
        self.paused = False
        self.stopping = False
        self.incarnation = 0
        self.pending: list[Callable[[], None]] = []
        self.timer_at: float | None = None
        self.timer_due: float | None = None  # real time of the scheduled timer event
        self.timer_token = 0
        self.pause_token = 0
        self.restart_on_exit = False
        self.known_epoch = 0
        """Newest epoch this process knows: its own from StartServing on, or a newer one its watch delivered
        (what its NotActive answers carry)."""
        self.withheld = 0
        """Outcomes withheld: calls whose handler finished after this process stopped serving under their
        admission epoch (answered "lease-lost")."""
        self.late_ack: tuple[float, float] | None = None
        """(extra answer delay, pause length) for the next renewal: the ``latepause`` fault."""
        self.served: tuple[int, int] = (0, -1)
        """(epoch, incarnation) of the last serving period."""

    # -- clocks and queries ------------------------------------------------------------------------------

    def local(self, t: float | None = None) -> float:
        """The instance's monotonic clock at real time ``t`` (default: now)."""
        return self.offset + self.rate * (self.env.now if t is None else t)

    def serving_at(self, t: float) -> bool:
        """The instance serves at real time ``t``: its process is up and its machine says so."""
        return self.up and self.machine.serving(self.local(t))

    def alive_since_serving(self, epoch: int) -> bool:
        """The process that served ``epoch`` still runs and was not asked to stop."""
        return self.up and not self.stopping and self.served == (epoch, self.incarnation)

    def start(self) -> None:  # pragma: no cover - every subclass starts its own I/O
        raise NotImplementedError

    def _carry_out(self, actions: list[Any]) -> None:  # pragma: no cover - every subclass has its own
        raise NotImplementedError

    def _close(self) -> None:
        """The process ended: drop its I/O (requests in flight, watches)."""

    def _answers_calls(self) -> bool:
        """A call sent now reaches the process (it is up; a subclass may add: and connected)."""
        return self.up

    def _send_reply(self, send: Callable[[], None]) -> None:
        """A reply leaves the process: it arrives after one network delay."""
        self.sim.later(self.sim.delay(), send)

    # -- lifecycle -----------------------------------------------------------------------------------------

    def restart_in(self, delay: float) -> None:
        """The supervisor: start the process again ``delay`` seconds from now, or, when it is still running
        then (a stop sent during a pause waits for the pause to end), as soon as it exits."""

        def due() -> None:
            if self.up:
                self.restart_on_exit = True
            else:
                self.start()

        self.sim.later(delay, due)

    def crash(self) -> None:
        """kill -9: the process and everything in memory are gone (requests in flight may still land)."""
        if not self.up:
            return
        self._log(TA.CRASH, epoch=self.machine.epoch)
        self._end()
        self.machine.crash()

    def stop(self) -> None:
        """SIGTERM: the machine stops serving and releases the key; the process exits on ``Exit``."""
        if not self.up:
            return
        self.stopping = True
        inc = self.incarnation
        self._deliver(lambda now: self.machine.stop(now), inc)

    def pause(self, seconds: float) -> None:
        """SIGSTOP for ``seconds`` (extends a pause in progress)."""
        if not self.up:
            return
        if not self.paused:
            self._log(TA.PAUSE, epoch=self.machine.epoch)
            self.paused = True
        self.pause_token += 1
        token = self.pause_token
        self.sim.later(seconds, lambda: self._resume(token))

    def _resume(self, token: int) -> None:
        if token != self.pause_token or not self.up or not self.paused:
            return
        self._log(TA.RESUME, epoch=self.machine.epoch)
        self.paused = False
        while self.pending and self.up and not self.paused:
            self.pending.pop(0)()

    def _end(self) -> None:
        if self.restart_on_exit:
            self.restart_on_exit = False
            self.sim.later(0.0, self.start)
        self.up = False
        self.paused = False
        self.incarnation += 1
        self.pending.clear()
        self._close()
        self.timer_at = self.timer_due = None
        self.late_ack = None

    # -- events into the machine -------------------------------------------------------------------------

    def _deliver(self, handler: Handler, inc: int) -> None:
        """Hand an event to the machine now, or when the pause ends; dropped for a dead incarnation."""
        if not self.up or inc != self.incarnation:
            return
        if self.paused:
            self.pending.append(lambda: self._deliver(handler, inc))
            return
        actions = handler(self.local())
        self._carry_out(actions)
        self.sim.checker.after_event(self, self.env.now)

    def _timer_fired(self, token: int, inc: int) -> None:
        if token != self.timer_token or inc != self.incarnation or self.timer_at is None:
            return
        self.timer_due = None
        if self.local() < self.timer_at:  # asked for later since: wait on
            self._schedule_timer(inc)
            return

        def handle(now: float) -> list[Effect]:
            self.timer_at = None
            return self.machine.tick(now)  # a request without an answer for the write timeout times out

        self._deliver(handle, inc)

    def _schedule_timer(self, inc: int) -> None:
        at = self.timer_at
        if at is None:
            return
        due = max(self.env.now, (at - self.offset) / self.rate + 1e-9)
        if self.timer_due is not None and self.timer_due <= due:
            return  # an earlier timer event is pending; it re-arms itself
        self.timer_due = due
        self.timer_token += 1
        token = self.timer_token
        self.sim.later(due - self.env.now, lambda: self._timer_fired(token, inc))

    # -- effects every machine has -------------------------------------------------------------------------

    def _set_timer(self, at: float) -> None:
        """``Timer(at)``: wake the machine at ``at`` on the local clock."""
        self.timer_at = at
        self._schedule_timer(self.incarnation)

    def _started(self, epoch: int) -> None:
        """``StartServing(epoch)``."""
        self.served = (epoch, self.incarnation)
        self.known_epoch = epoch  # as the SDK's driver: its own epoch is the newest it knows
        self.sim.log.note(self.env.now, self.name, "start-serving", f"epoch={epoch}")

    def _stopped(self, reason: str) -> None:
        """``StopServing(reason)``."""
        self.sim.log.note(self.env.now, self.name, "stop-serving", reason)

    def _exited(self) -> None:
        """``Exit``: the process ends."""
        self.sim.log.note(self.env.now, self.name, "exit")
        self._end()

    # -- client calls --------------------------------------------------------------------------------------

    def call(self, reply: Reply) -> None:
        """A client call reaches this instance: ``reply(outcome, epoch, fenced)`` with outcome "ok",
        "not-active", "lease-lost" or "no-responders" (the process is gone), after the network delay back.

        An admitted call runs its handler for a heavy-tailed while (:meth:`Simulation.handler_time`; a paused
        process finishes it after it resumes). Its outcome goes out stamped with the epoch the SDK's rule gives
        (:meth:`aegis.sdk.election.Election.reply_epoch`, as the SDK's ``Service`` asks it): the admission
        epoch, and only while the machine still serves under it; otherwise the caller hears "lease-lost".
        ``fenced`` is the checker's ghost, not the protocol's: whether the reply was produced inside its epoch's
        tenure (the spec's ``Fenced``), so the client's side can check what it accepts."""
        sim = self.sim
        if not self._answers_calls():
            sim.later(sim.delay(), lambda: reply("no-responders", 0, False))
            return
        inc = self.incarnation

        def handle() -> None:
            if not self._answers_calls() or inc != self.incarnation:
                sim.later(sim.delay(), lambda: reply("no-responders", 0, False))
                return
            if self.paused:
                self.pending.append(handle)
                return
            m = self.machine
            if m.serving(self.local()):
                epoch = m.epoch
                self._log(TA.SERVE, epoch=epoch)
                sim.checker.after_event(self, self.env.now)
                sim.later(sim.handler_time(), lambda: complete(epoch))
            else:
                known = max(m.epoch, self.known_epoch)
                self._send_reply(lambda: reply("not-active", known, False))

        def complete(admitted: int) -> None:
            if not self.up or inc != self.incarnation:
                return  # the process died with the call: the caller's attempt times out
            if self.paused:
                self.pending.append(lambda: complete(admitted))
                return
            stamp = self.machine.reply_epoch(self.local(), admitted, self.known_epoch)
            if stamp is None:
                self.withheld += 1
                self._send_reply(lambda: reply("lease-lost", admitted, False))
                return
            fenced = sim.checker.reply_sent(self, admitted, stamp, self.env.now)
            self._send_reply(lambda: reply("ok", stamp, fenced))

        handle()

    # -- logging -------------------------------------------------------------------------------------------

    def _log(self, action: TA, **fields: object) -> None:
        self.sim.log.emit(self.env.now, self.name, action, self.local(), **fields)  # type: ignore[arg-type]


class SimInstance(SimProcess):
    """A process of the single-active group driving :class:`aegis.sdk.election.Election`; see the module
    docstring."""

    def __init__(
        self,
        sim: Simulation,
        name: str,
        *,
        rate: float,
        offset: float,
        machine_factory: MachineFactory = Election,
    ) -> None:
        super().__init__(sim, name, rate=rate, offset=offset)
        self.sim: Simulation = sim
        self.factory = machine_factory
        self.machine: Election = machine_factory(sim.params)
        self.watch: Watch | None = None
        self.inflight: _InFlight | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start (or restart) the process: a new machine, a watch, a read of the key, ``start``."""
        if self.up:
            return
        kv = self.sim.kv
        if not kv.up:  # the start-up read needs the stream leader: try again shortly
            self.sim.later(0.25, self.start)
            return
        self.up = True
        self.paused = False
        self.stopping = False
        self.incarnation += 1
        self.pending.clear()
        self.inflight = None
        self.timer_at = self.timer_due = None
        self.machine = self.factory(self.sim.params)
        inc = self.incarnation
        self.watch = kv.subscribe(lambda e: self._on_watch(e, inc), self.sim.watch_delay)
        key = kv.state()
        self._deliver(lambda now: self.machine.start(now, key), inc)

    def _close(self) -> None:
        self.inflight = None
        if self.watch is not None:
            self.watch.cancel()
            self.watch = None

    # -- events into the machine -------------------------------------------------------------------------

    def _on_watch(self, entry: Entry, inc: int) -> None:
        def handle(now: float) -> list[Effect]:
            if entry.epoch > self.known_epoch:
                self.known_epoch = entry.epoch
            return self.machine.observe(now, entry.state)

        self._deliver(handle, inc)

    def _timed_out(self, now: float, flight: _InFlight) -> list[Effect]:
        """No answer within the write timeout: what the SDK's ``kv_write`` timeout reports."""
        self.inflight = None
        return self.machine.write_timeout(now, flight.req)

    def _answer(self, req: int, inc: int, handle: Handler) -> None:
        """An answer to request ``req`` arrives (through the network, possibly lost in an outage)."""

        def wrapped(now: float) -> list[Effect]:
            flight = self.inflight
            if flight is None or flight.req != req:
                return []  # an answer to a request already timed out: kv_write raised long ago
            if now >= flight.sent + self.sim.params.write_timeout_s:
                return self._timed_out(now, flight)
            self.inflight = None
            return handle(now)

        self._deliver(wrapped, inc)

    # -- actions out of the machine ------------------------------------------------------------------------

    def _carry_out(self, actions: list[Effect]) -> None:
        for a in actions:
            if isinstance(a, TraceStep):
                self._log(a.step, rev=a.rev, epoch=a.epoch, op=a.op, kind=a.kind)
            elif isinstance(a, Timer):
                self._set_timer(a.at)
            elif isinstance(a, Write):
                self._write(a)
            elif isinstance(a, Probe):
                self._probe(a)
            elif isinstance(a, StartServing):
                self._started(a.epoch)
            elif isinstance(a, StopServing):
                self._stopped(a.reason)
            elif isinstance(a, Exit):
                self._exited()
                return

    def _write(self, w: Write) -> None:
        sim = self.sim
        self.inflight = _InFlight(w.req, self.local())
        inc = self.incarnation
        name = self.name
        late, self.late_ack = (self.late_ack, None) if w.op == "renew" else (None, self.late_ack)

        def arrive() -> None:
            answer = sim.kv.write(w.op, w.expected, name, w.epoch)
            if answer is None:
                return  # no stream leader: no answer, the sender times out
            # A failed compare-and-set costs the SDK another round trip: it reads the entry to learn its kind and
            # whether it still holds its own record.
            back = sim.delay() if answer.ok else sim.delay() + sim.delay() + sim.delay()
            if late is not None:
                back += late[0]
            outages = sim.kv.outages
            sim.later(back, lambda: self._write_answer(w, answer, inc, outages, late))

        sim.later(sim.delay(), arrive)

    def _write_answer(
        self, w: Write, answer: WriteAnswer, inc: int, outages: int, late: tuple[float, float] | None = None
    ) -> None:
        sim = self.sim
        if late is not None and self.up and inc == self.incarnation:
            # latepause: the process takes the (late) answer, then pauses before anything else happens
            self.sim.later(0.0, lambda: self.pause(late[1]) if inc == self.incarnation else None)
        if sim.kv.outages != outages and sim.rng.random() < sim.config.outage_drop_p:
            return  # the node that would answer crashed: the answer is lost

        def handle(now: float) -> list[Effect]:
            if answer.ok:
                return self.machine.write_ok(now, answer.rev, w.req)
            ours = holds_own_record(w, answer.current, answer.holder, answer.holder_epoch, self.name)
            return self.machine.write_failed(now, answer.current, w.req, ours=ours)

        self._answer(w.req, inc, handle)

    def _probe(self, p: Probe) -> None:
        """A scratch write (the KV takes writes), then a read of the key through the stream leader."""
        sim = self.sim
        self.inflight = _InFlight(p.req, self.local())
        inc = self.incarnation

        def scratch() -> None:
            if sim.kv.scratch_write():
                sim.later(sim.delay() + sim.delay(), read)

        def read() -> None:
            if not sim.kv.up:
                return
            key = sim.kv.state()
            outages = sim.kv.outages
            sim.later(sim.delay(), lambda: self._probe_answer(p.req, key, inc, outages))

        sim.later(sim.delay(), scratch)

    def _probe_answer(self, req: int, key: KeyState, inc: int, outages: int) -> None:
        sim = self.sim
        if sim.kv.outages != outages and sim.rng.random() < sim.config.outage_drop_p:
            return

        def handle(now: float) -> list[Effect]:
            return self.machine.read_done(now, key, req)

        self._answer(req, inc, handle)
