"""A simulated process of a quorum-lease group, and a sticky client of one, connected to NATS nodes.

:class:`QuorumInstance` is the simulator's counterpart of :mod:`aegis.sdk.quorum_driver`: it drives the SDK's own
:class:`~aegis.sdk.quorum_election.QuorumElection` (or whatever ``machine_factory`` builds: the tests inject
broken subclasses) with events stamped with its own clock, and carries out the effects it returns; the rules are
the machine's, not restated here. The process model is :class:`aegis.sim.instance.SimProcess` (clock with its
rate, crash, restart, pauses that queue everything, graceful stop, client calls fenced by the machine's
``reply_epoch``); the I/O is the driver's:

* at start a read of the three keys (answered by a replica even while a bucket is stalled), then one watch per
  bucket, then ``start``;
* at most one write in flight per bucket (the machine's rule), each with a network delay each way; a refused
  compare-and-set costs another round trip (the driver reads the key through the stream leader) and is answered
  with the key as it is then; an answer that comes after ``write_timeout_s`` on the local clock is a timeout
  (``kv_write``'s), and the machine's own timer times out requests that get no answer at all;
* a connection to one NATS node: when that node crashes the process is cut off (answers and watch deliveries in
  flight to it are lost, client calls find nobody) until it reconnects to another node after ``reconnect_s``;
  writes it sends meanwhile wait in the client library's buffer and go out on reconnect (they may land after the
  machine timed them out); the watches resume with each key's current record;
* rule 8: what its ``NotActive`` answers carry is the newest ballot the machine has seen in a majority
  (``majority_ballot``, as the driver's ``_tell_clients``).

:class:`QuorumClient` is :class:`aegis.sim.client.StickyClient` (the SDK's sticky-client core) following the group
through the three buckets: it names the leader the machine's own rule 8 names (a never-started
``QuorumElection`` as its view of the three keys), and it too is connected to one node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aegis.sdk.election import ElectionParams, Exit, StartServing, StopServing, Timer
from aegis.sdk.quorum_election import Leadership, QEffect, QuorumElection, QWrite, Slot, majority_claim
from aegis.sim.client import StickyClient
from aegis.sim.instance import SimProcess, _InFlight
from aegis.sim.kv import Entry, Watch
from aegis.sim.quorum_kv import QAnswer

if TYPE_CHECKING:
    from aegis.sim.quorum_run import QuorumSimulation

QMachineFactory = Callable[[str, ElectionParams, Callable[[], float]], QuorumElection]
"""Builds one process's quorum machine from its id, the parameters and its back-off draw (``QuorumElection`` or
a subclass)."""


class QuorumInstance(SimProcess):
    """A process of the group driving the quorum lease; see the module docstring."""

    def __init__(
        self,
        sim: QuorumSimulation,
        name: str,
        *,
        rate: float,
        offset: float,
        machine_factory: QMachineFactory = QuorumElection,
    ) -> None:
        super().__init__(sim, name, rate=rate, offset=offset)
        self.sim: QuorumSimulation = sim
        self.factory = machine_factory
        self.machine: QuorumElection = machine_factory(name, sim.params, sim.rng.random)
        self.watches: list[Watch] = []
        self.inflight: dict[int, _InFlight] = {}
        self.node: int | None = None
        """The NATS node its connection is on (None: cut off, or not running)."""
        self.conn = 0
        """Moves with every connection: an answer that came by an earlier one is lost."""
        self.buffered: list[Callable[[], None]] = []

    # -- queries -------------------------------------------------------------------------------------------

    def available_at(self, t: float) -> bool:
        """A client call reaching it now is admitted: up, running, connected and serving."""
        return not self.paused and self.node is not None and self.serving_at(t)

    def _answers_calls(self) -> bool:
        return self.up and self.node is not None

    def _send_reply(self, send: Callable[[], None]) -> None:
        if self.node is None:
            return  # cut off: the reply is lost, the caller's attempt times out
        super()._send_reply(send)

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start (or restart): connect, read the three keys, watch them, ``start``."""
        if self.up:
            return
        sim = self.sim
        node = sim.pick_node()
        if node is None:  # no node to connect to: try again shortly
            sim.later(0.25, self.start)
            return
        self.up = True
        self.paused = False
        self.stopping = False
        self.incarnation += 1
        self.pending.clear()
        self.inflight = {}
        self.timer_at = self.timer_due = None
        self.machine = self.factory(self.name, sim.params, sim.rng.random)
        self.node = node
        self.conn += 1
        inc = self.incarnation

        def begin() -> None:
            if not self.up or inc != self.incarnation or self.node is None:
                if self.up and inc == self.incarnation:  # cut off while reading: read again on reconnect
                    self.sim.later(0.05, begin)
                return
            slots = [b.slot() for b in sim.buckets]
            self._watch(inc, initial=False)
            self._deliver(lambda now: self.machine.start(now, slots), inc)

        sim.later(sim.delay() + sim.delay(), begin)

    def _close(self) -> None:
        self.inflight = {}
        self.buffered = []
        self.node = None
        self.conn += 1
        for w in self.watches:
            w.cancel()
        self.watches = []

    def cut(self) -> None:
        """The node its connection is on crashed: cut off until it reconnects elsewhere."""
        if not self.up or self.node is None:
            return
        self.sim.log.note(self.env.now, self.name, "disconnected", f"node {self.node}")
        self.node = None
        self.conn += 1
        for w in self.watches:
            w.cancel()
        self.watches = []
        inc = self.incarnation
        self.sim.later(self.sim.reconnect_delay(), lambda: self._reconnect(inc))

    def _reconnect(self, inc: int) -> None:
        if not self.up or inc != self.incarnation or self.node is not None:
            return
        if self.paused:  # the client library runs in the stopped process too
            self.pending.append(lambda: self._reconnect(inc))
            return
        node = self.sim.pick_node()
        if node is None:
            self.sim.later(0.25, lambda: self._reconnect(inc))
            return
        self.node = node
        self.conn += 1
        self.sim.log.note(self.env.now, self.name, "reconnected", f"node {node}")
        if self.machine.started:
            self._watch(inc, initial=True)
        buffered, self.buffered = self.buffered, []
        for send in buffered:
            send()

    # -- events into the machine -------------------------------------------------------------------------

    def _watch(self, inc: int, *, initial: bool) -> None:
        """One watch per bucket; ``initial``: it delivers the key's current record first (a resumed watch)."""
        sim = self.sim
        conn = self.conn
        self.watches = []
        for b, bucket in enumerate(sim.buckets):
            self.watches.append(
                bucket.subscribe(lambda e, b=b: self._on_watch(b, e, inc), sim.watch_delay)  # type: ignore[misc]
            )
            current = bucket.key
            if initial and current.state.rev:
                sim.later(
                    sim.watch_delay(),
                    lambda b=b, e=current: self._on_watch(b, e, inc) if conn == self.conn else None,  # type: ignore[misc]
                )

    def _on_watch(self, b: int, entry: Entry, inc: int) -> None:
        slot = Slot(entry.state.rev, entry.value)  # type: ignore[arg-type]
        self._deliver(lambda now: self.machine.observe(now, b, slot), inc)

    # -- effects out of the machine ------------------------------------------------------------------------

    def _carry_out(self, actions: list[QEffect]) -> None:
        for a in actions:
            if isinstance(a, QWrite):
                self._write(a)
            elif isinstance(a, Timer):
                self._set_timer(a.at)
            elif isinstance(a, StartServing):
                self._started(a.epoch)
            elif isinstance(a, StopServing):
                self._stopped(a.reason)
            elif isinstance(a, Leadership):
                self.sim.log.note(
                    self.env.now, self.name, f"leadership:{a.kind}", f"ballot={a.epoch} {a.reason}"
                )
            elif isinstance(a, Exit):
                self._exited()
                return
        ballot, holder = self.machine.majority_ballot()  # rule 8, as the driver's _tell_clients
        if holder is not None and ballot > self.known_epoch:
            self.known_epoch = ballot

    def _write(self, w: QWrite) -> None:
        sim = self.sim
        self.inflight[w.bucket] = _InFlight(w.req, self.local())
        inc = self.incarnation
        late: tuple[float, float] | None = None
        if w.op == "renew" and self.late_ack is not None:
            late, self.late_ack = self.late_ack, None
        self.sim.log.note(
            self.env.now, self.name, f"q{w.bucket}:{w.op}", f"ballot={w.claim.ballot} on rev {w.expected}"
        )

        def send() -> None:
            if not self.up or inc != self.incarnation:
                return
            conn = self.conn
            sim.later(sim.delay(), lambda: arrive(conn))

        def arrive(conn: int) -> None:
            bucket = sim.buckets[w.bucket]
            answer = bucket.cas(w.expected, w.claim)
            if answer is None:
                return  # stalled: no answer (the write may land when the bucket recovers)
            # A refusal costs the driver a read through the stream leader: another round trip.
            back = sim.delay() if answer.ok else sim.delay() + sim.delay() + sim.delay()
            if late is not None:
                back += late[0]
            outages = bucket.outages
            sim.later(back, lambda: self._write_answer(w, answer, inc, conn, outages, late))

        if self.node is None:
            self.buffered.append(send)  # nats-py buffers what is published while it reconnects
        else:
            send()

    def _write_answer(
        self,
        w: QWrite,
        answer: QAnswer,
        inc: int,
        conn: int,
        outages: int,
        late: tuple[float, float] | None,
    ) -> None:
        sim = self.sim
        if late is not None and self.up and inc == self.incarnation:
            # latepause: the process takes the (late) answer, then pauses before anything else happens
            sim.later(0.0, lambda: self.pause(late[1]) if inc == self.incarnation else None)
        if conn != self.conn:
            return  # the connection it was to come by is gone
        if sim.buckets[w.bucket].outages != outages and sim.rng.random() < sim.config.outage_drop_p:
            return  # the stream leader that would answer crashed: the answer is lost

        def handle(now: float) -> list[QEffect]:
            flight = self.inflight.get(w.bucket)
            if flight is None or flight.req != w.req:
                return []  # an answer to a request already timed out: kv_write raised long ago
            del self.inflight[w.bucket]
            if now >= flight.sent + sim.params.write_timeout_s:
                return self.machine.write_timeout(now, w.bucket, w.req)
            if answer.ok:
                return self.machine.write_ok(now, w.bucket, answer.rev, w.req)
            return self.machine.write_failed(now, w.bucket, answer.current, w.req)

        self._deliver(handle, inc)


class QuorumClient(StickyClient):
    """A sticky client of a quorum-lease group; see the module docstring."""

    def __init__(self, sim: QuorumSimulation, name: str, **kwargs: Any) -> None:
        super().__init__(sim, name, **kwargs)
        self.sim: QuorumSimulation = sim
        self.lens = QuorumElection(f"{name}-view", sim.params)
        """Never started: only its view of the three keys and its rule 8 (``majority_ballot``)."""
        self.node: int | None = None
        self.conn = 0
        self.watches: list[Watch] = []
        self.buffered: list[Callable[[], None]] = []

    def start(self) -> None:
        """Connect, watch the three keys (the current records arrive first), start calling."""
        self.node = self.sim.pick_node()
        self.conn += 1
        self._watch()
        self.sim.later(self.interval_s, self._new_call)

    def _watch(self) -> None:
        sim = self.sim
        conn = self.conn
        self.watches = []
        for b, bucket in enumerate(sim.buckets):
            self.watches.append(bucket.subscribe(lambda e, b=b: self._on_bucket(b, e), sim.watch_delay))  # type: ignore[misc]
            current = bucket.key
            if current.state.rev:
                sim.later(
                    sim.watch_delay(),
                    lambda b=b, e=current: self._on_bucket(b, e) if conn == self.conn else None,  # type: ignore[misc]
                )

    def _on_bucket(self, b: int, entry: Entry) -> None:
        self.lens.observe(self.env.now, b, Slot(entry.state.rev, entry.value))  # type: ignore[arg-type]
        # as the SDK's StickyClient: the newest ballot claimed in a majority; released by a majority: nobody
        won = majority_claim([slot.claim for slot in self.lens.seen])
        if won is not None:
            self._follow(None if won.released else won.holder, 0 if won.released else won.ballot)

    def _send(self, target: str, token: int) -> None:
        if self.node is None:
            self.buffered.append(lambda: self._send(target, token))
            return
        inst = self.sim.by_name[target]
        conn = self.conn

        def reply(what: str, epoch: int, fenced: bool) -> None:
            if conn == self.conn:  # a reply to a connection that is gone is lost
                self._reply(token, what, epoch, fenced)

        self.sim.later(self.sim.delay(), lambda: inst.call(reply))

    def cut(self) -> None:
        """The node its connection is on crashed: cut off until it reconnects elsewhere."""
        if self.node is None:
            return
        self.node = None
        self.conn += 1
        for w in self.watches:
            w.cancel()
        self.watches = []
        self.sim.later(self.sim.reconnect_delay(), self._reconnect)

    def _reconnect(self) -> None:
        node = self.sim.pick_node()
        if node is None:
            self.sim.later(0.25, self._reconnect)
            return
        self.node = node
        self.conn += 1
        self._watch()
        buffered, self.buffered = self.buffered, []
        for send in buffered:
            send()
