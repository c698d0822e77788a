------------------------------- MODULE Lease -------------------------------
(***************************************************************************)
(* Sticky single-active election and failover on a NATS KV key.           *)
(*                                                                         *)
(* The reference definition of the protocol: the SDK's sans-IO state       *)
(* machine, the simulator and the trace checker all follow this module.    *)
(* aegis/spec/README.md explains it in prose, with the real-world value of every *)
(* constant.                                                               *)
(*                                                                         *)
(* Time is discrete. `now` counts real ticks; every instance has its own   *)
(* monotonic clock lc[i] that advances Rate +/- Drift units per tick. The  *)
(* protocol itself only knows DriftBound (what it assumes about clocks);   *)
(* a negative control sets Drift > DriftBound.                             *)
(*                                                                         *)
(* Variables hold absolute times and revisions so that a trace can be      *)
(* replayed against them (TraceLease.tla). Model checking uses the VIEW    *)
(* `View`, which keeps only what the future depends on (time differences,  *)
(* saturated, and revisions by rank), so the checked state space is finite *)
(* without bounding time or revisions.                                     *)
(***************************************************************************)
EXTENDS Naturals, Integers, FiniteSets, Sequences, TLC

CONSTANTS
    Inst,          \* instance ids
    Rate,          \* local clock units per real tick at nominal speed
    Drift,         \* real clock drift: a clock advances Rate-Drift .. Rate+Drift units per tick
    DriftBound,    \* the drift the protocol assumes (used in its serving window)
    Lease,         \* lease duration, local units: a standby takes over after this much silence
    RenewEvery,    \* the active sends a renewal this many local units after its previous one
    TTL,           \* per-key TTL on the server, real ticks (a backstop that writes an expiry marker)
    ExpiryLate,    \* the server runs expiry up to this many ticks after the TTL has passed
    ObsDelay,      \* a standby's watch delivers a new revision at most this many ticks after the write
    NetDelay,      \* a request reaches the KV, and its answer comes back, within this many ticks (each way)
    MaxCrashes,    \* fault budget: crashes (kill -9) over a whole behaviour
    MaxPauses,     \* fault budget: pauses (GC, SIGSTOP) of unbounded length
    MaxOutages,    \* fault budget: KV unavailability periods (stream leader election) of unbounded length
    MaxReleases,   \* graceful stops over a whole behaviour
    Timely,        \* TRUE: the timing bounds above are enforced (needed for failover bounds and liveness)
    Fencing,       \* TRUE: an active stops serving at the end of its window (FALSE: negative control)
    UseCAS,        \* TRUE: takeover by compare-and-set (FALSE: plain put, negative control)
    WithClient,    \* model a client (calls, replies in flight, epoch check); FALSE keeps the state space small
    MaxCalls,      \* with a client: at most this many calls and replies in flight at once
    ClientCheck,   \* TRUE: clients drop replies older than the newest epoch they accepted
    WindowRule,    \* "safe": Lease*(1-rho)/(1+rho) from the send; "design": Lease*(1-rho) as DESIGN.md
                   \* first said; "ack": the safe length but counted from the ack (negative control)
    ReplyRule      \* "fenced": a reply carries its call's admission epoch and is a success only if the
                   \* instance still serves under it; "unchecked": admission epoch, no check; "current":
                   \* the newest epoch the instance knows, no check (the SDK before issue 12)

ASSUME /\ Rate \in Nat \ {0} /\ Drift \in Nat /\ DriftBound \in Nat
       /\ Drift <= Rate /\ DriftBound < Rate
       /\ {Lease, RenewEvery, TTL} \subseteq Nat \ {0}
       /\ ObsDelay < TTL     \* watches deliver a marker before it ages out
       /\ {ExpiryLate, ObsDelay, NetDelay, MaxCrashes, MaxPauses, MaxOutages, MaxReleases, MaxCalls} \subseteq Nat
       /\ {Timely, Fencing, UseCAS, WithClient, ClientCheck} \subseteq BOOLEAN
       /\ WindowRule \in {"safe", "design", "ack"}
       /\ ReplyRule \in {"fenced", "unchecked", "current"}

(* Settings with a default, overridden in a config by `Name = value` (not  *)
(* constants: the trace checker's generated config need not name them).   *)
MarkerTTL == TTL   \* a delete/expiry marker ages out this many ticks after it was written
                   \* (the SDK's bucket: 1 s, at most the key's TTL)
OutageMax == 0     \* > 0: a KV outage lasts at most this many ticks (Timely); 0: any length
OutageMin == 0     \* a KV outage lasts at least this many ticks
WriteTimeout == 0  \* > 0: while the KV is down, a request gets no answer and times out within this
                   \* many ticks (Timely; the SDK's write timeout); 0: it may wait for the KV's return
MaxCuts == 0       \* fault budget: one instance cut off from the KV (and its watch) while the KV
                   \* serves the others, for any length
SelfConflicts == FALSE  \* TRUE: a renewal that landed may be answered "wrong last sequence" at its
                   \* own revision (a retry of the same message met the stored first attempt; seen
                   \* on NATS after a partition healed). The instance adopts it (Answer: `mine`).
                   \* Trace checking allows it.
StaleWatch == FALSE  \* TRUE: a standby's watch may also deliver a value the key no longer holds
                   \* (older than `prev`, newer than what it delivered last): seen on NATS when
                   \* a cut-off instance's watch resumed after a partition healed. It only restarts
                   \* the standby's timer (a later revision). Trace checking allows it.

ASSUME /\ MarkerTTL \in Nat \ {0} /\ MarkerTTL <= TTL
       /\ ObsDelay < MarkerTTL     \* watches deliver a marker before it ages out
       /\ {OutageMax, OutageMin, WriteTimeout, MaxCuts} \subseteq Nat
       /\ OutageMax > 0 => OutageMin <= OutageMax

(* The serving window in local units, counted from the send time of the   *)
(* last acknowledged write. With rho = DriftBound/Rate: a slow active      *)
(* needs Window/(Rate-DriftBound) ticks to use it up, a fast standby needs *)
(* at least Lease/(Rate+DriftBound) ticks to time out, hence               *)
(* Window <= Lease*(Rate-DriftBound)/(Rate+DriftBound).                    *)
Window == IF WindowRule = "design"
          THEN (Lease * (Rate - DriftBound)) \div Rate
          ELSE (Lease * (Rate - DriftBound)) \div (Rate + DriftBound)

(* The window must outlast a worst-case round trip, or a new active may  *)
(* never get to serve (its window would be over when the answer comes).  *)
ASSUME Timely => Window > (Rate + Drift) * 2 * NetDelay

Max(a, b) == IF a > b THEN a ELSE b
Min(a, b) == IF a < b THEN a ELSE b
Ceil(a, b) == (a + b - 1) \div b

(* Timing promises, in real ticks, checked by TLC (FailoverBounded). In  *)
(* MC_2inst and MC_2inst_delays they are tight: one tick less is violated. *)
(* A standby may take over when the key expires (TTL + ExpiryLate after   *)
(* the last write) or when its own timer runs out (LeaseTicks: Lease on a *)
(* clock that may run slow), whichever comes first. After a crash: the    *)
(* renewal in flight lands within NetDelay, the watch tells the standby   *)
(* within ObsDelay, and its timer starts; when it fires, the standby's    *)
(* probe reads the key just before it expires (the read's answer: one     *)
(* NetDelay), its campaign on that superseded revision fails (a round     *)
(* trip), and it probes again (two round trips: the scratch write, then   *)
(* the read) and campaigns (a round trip): 10 one-way delays in all.      *)
(* After a graceful stop: the delete lands within NetDelay and the watch  *)
(* tells the standby within ObsDelay; or the standby takes in the answer  *)
(* of a probe read before the delete landed and campaigns on the old      *)
(* revision (a round trip, the failure names the marker). Then a probe    *)
(* (two round trips) and a campaign.                                      *)
TakeoverDelay == ObsDelay + 10 * NetDelay
LeaseTicks == IF Drift < Rate THEN Ceil(Lease, Rate - Drift) ELSE Lease   \* a clock that may stop: no bound
FailoverBound == Min(LeaseTicks, TTL + ExpiryLate) + TakeoverDelay
(* After a graceful stop the delete marker lets a standby in at once.     *)
HandoverDelay == 7 * NetDelay + Max(ObsDelay, 2 * NetDelay)
ReleaseBound == HandoverDelay
(* A marker must outlive a handover: a standby's campaign on the marker's  *)
(* revision fails once the marker has aged out, and it probes again (the   *)
(* SDK: markers live 1 s, a handover takes a few one-way delays).          *)
ASSUME Timely => MarkerTTL > HandoverDelay
(* After a KV outage shorter than the key's TTL (OutageMax > 0) the       *)
(* incumbent keeps the key and serves again within a renewal period on    *)
(* the slowest clock and two round trips (the retried renewal, which may   *)
(* fail on its own timed-out renewal that landed, then the renewal after  *)
(* adopting it).                                                          *)
RenewTicks == IF Drift < Rate THEN Ceil(RenewEvery, Rate - Drift) ELSE RenewEvery
OutageRecoveryBound == RenewTicks + 4 * NetDelay
(* A probe is a scratch write and then a read (two round trips): its read  *)
(* reaches the KV within 3 one-way delays of the probe's start.           *)
ReadDelay == 3 * NetDelay

Kinds == {"val", "del", "exp", "none"}      \* value, delete marker, expiry (MaxAge) marker, absent
NoKey == [rev |-> 0, kind |-> "none", ep |-> 0, wAt |-> 0]
NoReq == [op |-> "none", exp |-> 0, ep |-> 0, sentAt |-> 0, t |-> 0, st |-> "none", rev |-> 0, kind |-> "none",
          cep |-> 0]
NoFo == [k |-> "none", t |-> 0]

(* A compare-and-set on a revision the key k has left can never succeed:  *)
(* every later revision is newer than all stored ones, and "absent" is 0. *)
(* Such a ghost is removed at once (it could only fail, unheard), which   *)
(* keeps the state space small. (A create, on 0, can land once the key is *)
(* absent again.)                                                         *)
DeadFor(q, k) == q.st = "sent" /\ q.exp # 0 /\ q.exp # k.rev /\ (UseCAS \/ q.op # "acquire")
Prune(g, k) == [j \in DOMAIN g |-> IF DeadFor(g[j], k) THEN NoReq ELSE g[j]]

VARIABLES
    now,        \* real time, ticks
    lc,         \* lc[i]: instance i's monotonic clock, local units
    up,         \* up[i]: the process runs
    paused,     \* paused[i]: the process is stopped (GC, SIGSTOP); its clock keeps running
    role,       \* "standby" | "active" | "releasing"
    epoch,      \* epoch[i]: revision of the write that made i active (its fencing token)
    myRev,      \* myRev[i]: revision of i's last acknowledged write (base of its next CAS)
    deadline,   \* deadline[i]: i serves only while lc[i] < deadline[i]
    lastSend,   \* lastSend[i]: local send time of i's last lease write (renewal schedule)
    seen,       \* seen[i]: [rev, kind] of the newest key state standby i knows of
    seenAt,     \* seenAt[i]: local time at which i learnt seen[i] (in probe mode: of its last probe)
    probe,      \* probe[i]: a probe or campaign of standby i timed out (KV unavailable): probe mode
    wpos,       \* wpos[i]: newest revision i's watch has delivered (a watch never goes back)
    req,        \* req[i]: i's request in flight, or its answer (NoReq when idle)
    ghost,      \* ghost[i]: a request sent before i crashed; it may still land
    kv,         \* the election key: [rev, kind, ep (epoch in the value), wAt (real write time)]
    prev,       \* the key state before kv: a watch may still deliver it late
    seq,        \* the stream's last sequence number (revisions come from here)
    kvUp,       \* the KV accepts reads and writes (it has a stream leader)
    crashes, pauses, outages, releases,   \* faults used so far
    cuts,       \* cut-offs of one instance used so far (MaxCuts)
    cut,        \* the instances cut off from the KV and their watch (the KV serves the others)
    downAt,     \* real time at which the last outage began (OutageMax)
    call,       \* call[i]: admission epoch of the exclusive call i's handler is running (0: none)
    replies,    \* success replies in flight to the client: [ep (their Aegis-Epoch), ok (ghost: fenced)]
    cliEpoch,   \* newest epoch the client has accepted or discovered
    cliStale,   \* history: the client accepted a reply older than one it had accepted
    cliForged,  \* history: the client accepted a success reply that was not fenced (see AcceptedRepliesFenced)
    hiServed,   \* history: the newest epoch that ever served
    fo,         \* history: [k, t] ticks since the serving instance crashed/released (or since the KV came
                \* back from a bounded outage, the incumbent alive) while nobody serves
    failover,   \* history (OutageMax > 0 only): a newer epoch served after an older one
    overlapped  \* history: instances whose running call saw another instance serve since its admission

inst == <<lc, up, paused, role, epoch, myRev, deadline, lastSend, seen, seenAt, probe, wpos, req, ghost>>
store == <<kv, prev, seq, kvUp>>
env == <<crashes, pauses, outages, releases, cuts, cut, downAt>>
client == <<call, replies, cliEpoch, cliStale, cliForged>>
hist == <<hiServed, fo, overlapped, failover>>
vars == <<now, inst, store, env, client, hist>>

-----------------------------------------------------------------------------
(* Derived state *)

(* i answers clients: it holds the lease and its window has not run out.  *)
Serving(i) == /\ up[i]
              /\ role[i] = "active"
              /\ Fencing => lc[i] < deadline[i]

SomeServing == \E i \in Inst : Serving(i)

(* The revision a CAS must name: 0 when the key is absent. *)
CurRev == kv.rev

(* A standby may probe, and then campaign: the key is gone or marked      *)
(* deleted/expired, or it has seen no new revision for the whole lease on *)
(* its own clock. In probe mode (the KV did not answer) it only probes,   *)
(* once every RenewEvery.                                                 *)
Ready(i) == IF probe[i] THEN lc[i] - seenAt[i] >= RenewEvery
            ELSE seen[i].kind \in {"del", "exp", "none"} \/ lc[i] - seenAt[i] >= Lease

Observable(e, i) == e.kind \in {"val", "del", "exp"} /\ e.rev > wpos[i]

Runs(i) == up[i] /\ ~paused[i]

-----------------------------------------------------------------------------
Init ==
    /\ now = 0
    /\ lc = [i \in Inst |-> 0]
    /\ up = [i \in Inst |-> FALSE]
    /\ paused = [i \in Inst |-> FALSE]
    /\ role = [i \in Inst |-> "standby"]
    /\ epoch = [i \in Inst |-> 0]
    /\ myRev = [i \in Inst |-> 0]
    /\ deadline = [i \in Inst |-> 0]
    /\ lastSend = [i \in Inst |-> 0]
    /\ seen = [i \in Inst |-> [rev |-> 0, kind |-> "none"]]
    /\ seenAt = [i \in Inst |-> 0]
    /\ probe = [i \in Inst |-> FALSE]
    /\ wpos = [i \in Inst |-> 0]
    /\ req = [i \in Inst |-> NoReq]
    /\ ghost = [i \in Inst |-> NoReq]
    /\ kv = NoKey
    /\ prev = NoKey
    /\ seq = 0
    /\ kvUp = TRUE
    /\ crashes = 0 /\ pauses = 0 /\ outages = 0 /\ releases = 0
    /\ cuts = 0 /\ cut = {} /\ downAt = 0
    /\ call = [i \in Inst |-> 0]
    /\ replies = {}
    /\ cliEpoch = 0
    /\ cliStale = FALSE
    /\ cliForged = FALSE
    /\ hiServed = 0
    /\ fo = NoFo
    /\ overlapped = {}
    /\ failover = FALSE

-----------------------------------------------------------------------------
(* Time *)

(* How long request q may take to reach the KV (a probe's read comes after *)
(* its scratch write's round trip).                                       *)
QDelay(q) == IF q.op = "read" THEN ReadDelay ELSE NetDelay

(* Something that must happen before the clock moves on (Timely only).    *)
Urgent ==
    \/ \E i \in Inst :
         /\ Runs(i)
         /\ \/ role[i] = "active" /\ req[i].op = "none" /\ lc[i] - lastSend[i] >= RenewEvery
            \/ role[i] = "standby" /\ req[i].op = "none" /\ Ready(i)
            \/ req[i].st \in {"ok", "fail", "timeout"} /\ now - req[i].t >= NetDelay
            \/ role[i] = "standby" /\ i \notin cut /\ Observable(kv, i) /\ now - kv.wAt >= ObsDelay
    \/ kvUp /\ \E i \in Inst \ cut : req[i].st = "sent" /\ now - req[i].t >= QDelay(req[i])
    \/ kvUp /\ \E i \in Inst : ghost[i].st = "sent" /\ now - ghost[i].t >= NetDelay
    \/ kvUp /\ kv.kind = "val" /\ now - kv.wAt >= TTL + ExpiryLate
    \/ ~kvUp /\ OutageMax > 0 /\ now - downAt >= OutageMax
    \/ ~kvUp /\ WriteTimeout > 0 /\ \E i \in Inst : req[i].st = "sent" /\ now - req[i].t >= WriteTimeout

Tick ==
    /\ Timely => ~Urgent
    /\ now' = now + 1
    /\ \E d \in [Inst -> Rate - Drift .. Rate + Drift] :
          lc' = [i \in Inst |-> lc[i] + IF up[i] THEN d[i] ELSE Rate]
    /\ UNCHANGED <<up, paused, role, epoch, myRev, deadline, lastSend, seen, seenAt, probe, wpos, req, ghost>>
    /\ UNCHANGED <<store, env, client>>

-----------------------------------------------------------------------------
(* Instances *)

(* A process starts (first start or restart) having read k of the key.  *)
(* The model reads the current state (Start); a trace may show the state  *)
(* just before the last write (TraceLease: the read was answered before   *)
(* it, the line logged after): its watch then delivers that write.       *)
StartFrom(i, k) ==
    /\ ~up[i]
    /\ kvUp /\ i \notin cut
    /\ up' = [up EXCEPT ![i] = TRUE]
    /\ paused' = [paused EXCEPT ![i] = FALSE]
    /\ role' = [role EXCEPT ![i] = "standby"]
    /\ req' = [req EXCEPT ![i] = NoReq]
    /\ seen' = [seen EXCEPT ![i] = k]
    /\ seenAt' = [seenAt EXCEPT ![i] = lc[i]]
    /\ probe' = [probe EXCEPT ![i] = FALSE]
    \* a new watch starts at the key's current entry (or, after a stale read, at what was read)
    /\ wpos' = [wpos EXCEPT ![i] = IF k.rev = kv.rev THEN seq ELSE k.rev]
    /\ UNCHANGED <<now, lc, epoch, myRev, deadline, lastSend, ghost, store, env, client>>

Start(i) == StartFrom(i, [rev |-> kv.rev, kind |-> kv.kind])

Send(i, op, exp) ==
    req' = [req EXCEPT ![i] = [NoReq EXCEPT !.op = op, !.exp = exp, !.ep = epoch[i],
                                            !.sentAt = lc[i], !.t = now, !.st = "sent"]]

(* A standby that is ready does not campaign at once: it probes first, a *)
(* write to a scratch key (the KV has a stream leader and takes writes)   *)
(* and then a read of the election key through the leader, folded here   *)
(* into one request "read". It campaigns (Answer) only if the probe       *)
(* succeeds and the key has not moved. A campaign sent while the KV cannot *)
(* commit may land much later and depose an incumbent whose renewals      *)
(* failed meanwhile; the probe makes that rare, the spec shows it safe.    *)
Probe(i) ==
    /\ Runs(i)
    /\ role[i] = "standby"
    /\ req[i].op = "none"
    /\ Ready(i)
    /\ Send(i, "read", seen[i].rev)     \* exp: what it knew when the probe left
    /\ UNCHANGED <<now, lc, up, paused, role, epoch, myRev, deadline, lastSend, seen, seenAt, probe, wpos, ghost>>
    /\ UNCHANGED <<store, env, client>>

SendRenew(i) ==        \* the active renews by CAS on its last revision (TTL header included)
    /\ Runs(i)
    /\ role[i] = "active"
    /\ req[i].op = "none"
    /\ lc[i] - lastSend[i] >= RenewEvery
    /\ Send(i, "renew", myRev[i])
    /\ lastSend' = [lastSend EXCEPT ![i] = lc[i]]
    /\ UNCHANGED <<now, lc, up, paused, role, epoch, myRev, deadline, seen, seenAt, probe, wpos, ghost>>
    /\ UNCHANGED <<store, env, client>>

Release(i) ==          \* graceful stop: stop serving first, then delete by CAS
    /\ Runs(i)
    /\ role[i] = "active"
    /\ req[i].op = "none"
    /\ releases < MaxReleases
    /\ releases' = releases + 1
    /\ role' = [role EXCEPT ![i] = "releasing"]
    /\ Send(i, "release", myRev[i])
    /\ UNCHANGED <<now, lc, up, paused, epoch, myRev, deadline, lastSend, seen, seenAt, probe, wpos, ghost>>
    /\ UNCHANGED <<store, crashes, pauses, outages, cuts, cut, downAt, client>>

(* i learns how its request ended. A failed CAS names the key's current  *)
(* revision, kind and the epoch in its value (cep).                       *)
Answer(i) ==
    LET q == req[i]
        mine == q.st = "fail" /\ q.kind = "val" /\ q.cep = epoch[i]   \* my own timed-out write landed
    IN
    /\ Runs(i)
    /\ q.st \in {"ok", "fail", "timeout"}
    /\ \/ /\ q.op = "release" /\ mine
          \* delete again, on the revision my lost renewal wrote
          /\ Send(i, "release", q.rev)
          /\ UNCHANGED <<up, role, epoch, myRev, deadline, lastSend, seen, seenAt, probe, wpos>>
       \/ /\ q.op = "release" /\ ~mine                \* otherwise the process exits
          /\ req' = [req EXCEPT ![i] = NoReq]
          /\ up' = [up EXCEPT ![i] = FALSE]
          /\ role' = [role EXCEPT ![i] = "standby"]
          /\ UNCHANGED <<epoch, myRev, deadline, lastSend, seen, seenAt, probe, wpos>>
       \/ /\ q.op \in {"acquire", "renew"} /\ q.st = "ok"
          /\ req' = [req EXCEPT ![i] = NoReq]
          /\ role' = [role EXCEPT ![i] = "active"]
          /\ epoch' = [epoch EXCEPT ![i] = IF q.op = "acquire" THEN q.rev ELSE epoch[i]]
          /\ myRev' = [myRev EXCEPT ![i] = q.rev]
          \* the window counts from when the write was SENT: the KV may have applied it late
          \* ("ack": from when the answer came, a negative control)
          /\ deadline' = [deadline EXCEPT ![i] = (IF WindowRule = "ack" THEN lc[i] ELSE q.sentAt) + Window]
          /\ lastSend' = [lastSend EXCEPT ![i] = IF q.op = "acquire" THEN q.sentAt ELSE lastSend[i]]
          /\ UNCHANGED <<up, seen, seenAt, probe, wpos>>
       \/ /\ q.op = "renew" /\ mine
          \* adopt the revision of my own lost renewal; the window stays as it was (its send time is
          \* unknown), so renew on it at once (the SDK does: its window may be about to end)
          /\ req' = [req EXCEPT ![i] = NoReq]
          /\ myRev' = [myRev EXCEPT ![i] = q.rev]
          /\ lastSend' = [lastSend EXCEPT ![i] = lc[i] - RenewEvery]
          /\ UNCHANGED <<up, role, epoch, deadline, seen, seenAt, probe, wpos>>
       \/ /\ q.op \in {"acquire", "renew"} /\ q.st = "fail" /\ ~(q.op = "renew" /\ mine)
          \* someone else wrote (or the key is gone): stop at once; restart the timer from now,
          \* unless the watch already told us something newer. "Absent" (0) has no revision to
          \* compare: it counts as newer only if the watch delivered nothing since the request left.
          /\ req' = [req EXCEPT ![i] = NoReq]
          /\ role' = [role EXCEPT ![i] = "standby"]
          /\ IF \/ role[i] # "standby"
                \/ q.rev > seen[i].rev
                \/ q.rev = 0 /\ seen[i].rev <= q.exp
             THEN /\ seen' = [seen EXCEPT ![i] = [rev |-> q.rev, kind |-> q.kind]]
                  /\ seenAt' = [seenAt EXCEPT ![i] = lc[i]]
             ELSE UNCHANGED <<seen, seenAt>>
          /\ UNCHANGED <<up, epoch, myRev, deadline, lastSend, probe, wpos>>
       \/ /\ q.op = "renew" /\ q.st = "timeout"
          \* outcome unknown: keep serving until the window ends, retry on the same revision
          /\ req' = [req EXCEPT ![i] = NoReq]
          /\ UNCHANGED <<up, role, epoch, myRev, deadline, lastSend, seen, seenAt, probe, wpos>>
       \/ /\ q.op \in {"acquire", "read"} /\ q.st = "timeout"
          \* The KV is unavailable, not necessarily the active dead: probe mode, probe every RenewEvery.
          \* Unless the watch delivered a newer revision since the request left: the KV took a write,
          \* and the standby's timer already restarted from it (ordering rule: stale news loses).
          /\ req' = [req EXCEPT ![i] = NoReq]
          /\ IF seen[i].rev = q.exp
             THEN /\ probe' = [probe EXCEPT ![i] = TRUE]
                  /\ seenAt' = [seenAt EXCEPT ![i] = lc[i]]
             ELSE UNCHANGED <<probe, seenAt>>
          /\ UNCHANGED <<up, role, epoch, myRev, deadline, lastSend, seen, wpos>>
       \/ /\ q.op = "read" /\ q.st = "ok"
          \* The probe got through. The key moved (a newer revision): an observation, count from now.
          \* Back from probe mode: count from now too, so the incumbent has a whole lease to renew,
          \* and do not campaign. Otherwise campaign in this same step if still ready.
          /\ LET moved == q.rev > seen[i].rev
                  seen1 == IF moved THEN [rev |-> q.rev, kind |-> q.kind] ELSE seen[i]
                  at1 == IF moved \/ probe[i] THEN lc[i] ELSE seenAt[i]
                  ready1 == seen1.kind \in {"del", "exp", "none"} \/ lc[i] - at1 >= Lease
             IN /\ seen' = [seen EXCEPT ![i] = seen1]
                /\ seenAt' = [seenAt EXCEPT ![i] = at1]
                /\ probe' = [probe EXCEPT ![i] = FALSE]
                /\ IF ~probe[i] /\ ready1
                   THEN req' = [req EXCEPT ![i] = [NoReq EXCEPT !.op = "acquire", !.exp = seen1.rev,
                                                   !.ep = epoch[i], !.sentAt = lc[i], !.t = now,
                                                   !.st = "sent"]]
                   ELSE req' = [req EXCEPT ![i] = NoReq]
          /\ UNCHANGED <<up, role, epoch, myRev, deadline, lastSend, wpos>>
    /\ UNCHANGED <<now, lc, paused, ghost, store, env, client>>

(* The watch delivers a revision (possibly the previous one, late). Only  *)
(* a revision newer than what the standby knows counts: a probe's read or *)
(* a failed campaign's answer may have told it already. A new revision    *)
(* also ends probe mode: the KV took a write, and the timer restarts now  *)
(* (an incumbent that wrote it has a whole lease; a marker means there is *)
(* no incumbent to wait for).                                             *)
StaleValues(i) == IF StaleWatch THEN {[rev |-> r, kind |-> "val"] : r \in (wpos[i] + 1)..(prev.rev - 1)} ELSE {}

Observe(i) ==
    /\ Runs(i)
    /\ role[i] = "standby"
    /\ i \notin cut          \* a cut-off instance's watch delivers nothing (it resumes when healed)
    /\ \E e \in {[rev |-> kv.rev, kind |-> kv.kind], [rev |-> prev.rev, kind |-> prev.kind]} \cup StaleValues(i) :
          /\ Observable(e, i)
          /\ wpos' = [wpos EXCEPT ![i] = e.rev]
          /\ IF e.rev > seen[i].rev
             THEN /\ seen' = [seen EXCEPT ![i] = [rev |-> e.rev, kind |-> e.kind]]
                  /\ seenAt' = [seenAt EXCEPT ![i] = lc[i]]
                  /\ probe' = [probe EXCEPT ![i] = FALSE]
             ELSE UNCHANGED <<seen, seenAt, probe>>
    /\ UNCHANGED <<now, lc, up, paused, role, epoch, myRev, deadline, lastSend, req, ghost>>
    /\ UNCHANGED <<store, env, client>>

(* A write that may still land after its sender stopped waiting for it. *)
(* A probe's read changes nothing (its scratch write only takes a stream  *)
(* sequence number), so it never becomes a ghost.                         *)
MayLand(q) == q.st = "sent" /\ q.op \in {"acquire", "renew", "release"} /\ ~DeadFor(q, kv)

(* One ghost slot per instance: when two writes could still land, the    *)
(* model keeps one of them (either). Two lost renewals or a renewal and a *)
(* release are compare-and-sets on the same revision: at most one lands.  *)
Crash(i) ==            \* kill -9: a request in flight may still land
    /\ up[i]
    /\ crashes < MaxCrashes
    /\ crashes' = crashes + 1
    /\ up' = [up EXCEPT ![i] = FALSE]
    /\ paused' = [paused EXCEPT ![i] = FALSE]
    /\ role' = [role EXCEPT ![i] = "standby"]
    /\ \E g \in {ghost[i]} \cup (IF MayLand(req[i]) THEN {req[i]} ELSE {}) :
          ghost' = [ghost EXCEPT ![i] = g]
    /\ req' = [req EXCEPT ![i] = NoReq]
    /\ call' = [call EXCEPT ![i] = 0]     \* its handler dies with it: no answer, the client times out
    /\ UNCHANGED <<now, lc, epoch, myRev, deadline, lastSend, seen, seenAt, probe, wpos>>
    /\ UNCHANGED <<store, pauses, outages, releases, cuts, cut, downAt, replies, cliEpoch, cliStale, cliForged>>

Pause(i) ==
    /\ Runs(i)
    /\ pauses < MaxPauses
    /\ pauses' = pauses + 1
    /\ paused' = [paused EXCEPT ![i] = TRUE]
    /\ UNCHANGED <<now, lc, up, role, epoch, myRev, deadline, lastSend, seen, seenAt, probe, wpos, req, ghost>>
    /\ UNCHANGED <<store, crashes, outages, releases, cuts, cut, downAt, client>>

Resume(i) ==
    /\ up[i] /\ paused[i]
    /\ paused' = [paused EXCEPT ![i] = FALSE]
    /\ UNCHANGED <<now, lc, up, role, epoch, myRev, deadline, lastSend, seen, seenAt, probe, wpos, req, ghost>>
    /\ UNCHANGED <<store, env, client>>

-----------------------------------------------------------------------------
(* The KV (a JetStream stream with history 1 and per-message TTL) *)

Write(k) ==
    /\ kv' = k
    /\ prev' = kv
    /\ seq' = k.rev


(* What the KV does with request q: a compare-and-set on the key's last   *)
(* revision (0 = absent, i.e. create). The answer of a failed one carries *)
(* the current revision and kind (NATS reports the current sequence; the  *)
(* SDK reads the entry to learn the kind). A probe's read answers with    *)
(* the key's current revision and kind. (Its scratch write takes a stream *)
(* sequence number; revisions only matter by their order, so the model    *)
(* leaves that out. Trace checking allows such gaps.)                     *)
Outcome(q) ==
    LET ok == IF q.op = "acquire" /\ ~UseCAS THEN TRUE ELSE q.exp = CurRev
        new == seq + 1
    IN IF q.op = "read" THEN [q EXCEPT !.st = "ok", !.rev = CurRev, !.kind = kv.kind, !.t = now]
       ELSE IF ok THEN [q EXCEPT !.st = "ok", !.rev = new, !.t = now]
       ELSE [q EXCEPT !.st = "fail", !.rev = CurRev, !.kind = kv.kind, !.cep = kv.ep, !.t = now]

WriteFor(a) ==
    IF a.st = "ok" /\ a.op # "read"
    THEN Write([rev |-> a.rev, kind |-> IF a.op = "release" THEN "del" ELSE "val",
                ep |-> IF a.op = "acquire" THEN a.rev ELSE IF a.op = "renew" THEN a.ep ELSE 0,
                wAt |-> now])
    ELSE UNCHANGED <<kv, prev, seq>>

Apply(i) ==
    /\ kvUp /\ i \notin cut
    /\ req[i].st = "sent"
    /\ LET a == Outcome(req[i])
           self == [a EXCEPT !.st = "fail", !.kind = "val", !.cep = a.ep]   \* see SelfConflicts
       IN /\ \/ req' = [req EXCEPT ![i] = a]
             \/ SelfConflicts /\ a.op = "renew" /\ a.st = "ok" /\ req' = [req EXCEPT ![i] = self]
          /\ WriteFor(a)
    /\ ghost' = Prune(ghost, kv')
    /\ UNCHANGED <<now, lc, up, paused, role, epoch, myRev, deadline, lastSend, seen, seenAt, probe, wpos>>
    /\ UNCHANGED <<kvUp, env, client>>

ApplyGhost(i) ==       \* a dead instance's request lands; nobody hears the answer
    /\ kvUp
    /\ ghost[i].st = "sent"
    /\ WriteFor(Outcome(ghost[i]))
    /\ ghost' = Prune([ghost EXCEPT ![i] = NoReq], kv')
    /\ UNCHANGED <<now, lc, up, paused, role, epoch, myRev, deadline, lastSend, seen, seenAt, probe, wpos, req>>
    /\ UNCHANGED <<kvUp, env, client>>

(* While the stream has no leader, requests and answers get lost: the     *)
(* sender sees a timeout and cannot tell whether the write happened. A    *)
(* write that got no answer may also still be queued: it becomes a ghost *)
(* the KV may apply later (when the stream has a leader again), and its   *)
(* answer is ignored (the SDK matches answers to the request in flight by *)
(* request id; the sender has moved on to a new request).                 *)
Drop(i) ==
    /\ ~kvUp \/ i \in cut
    /\ req[i].st \in {"sent", "ok", "fail"}
    /\ req' = [req EXCEPT ![i] = [@ EXCEPT !.st = "timeout", !.t = now]]
    /\ \/ UNCHANGED ghost
       \/ MayLand(req[i]) /\ ghost' = [ghost EXCEPT ![i] = req[i]]
    /\ UNCHANGED <<now, lc, up, paused, role, epoch, myRev, deadline, lastSend, seen, seenAt, probe, wpos>>
    /\ UNCHANGED <<store, env, client>>

DropGhost(i) ==
    /\ ~kvUp \/ i \in cut
    /\ ghost[i].st = "sent"
    /\ ghost' = [ghost EXCEPT ![i] = NoReq]
    /\ UNCHANGED <<now, lc, up, paused, role, epoch, myRev, deadline, lastSend, seen, seenAt, probe, wpos, req>>
    /\ UNCHANGED <<store, env, client>>

Expire ==              \* TTL backstop: the server replaces the value by an expiry marker
    /\ kvUp
    /\ kv.kind = "val"
    /\ now - kv.wAt >= TTL
    /\ Write([rev |-> seq + 1, kind |-> "exp", ep |-> 0, wAt |-> now])
    /\ ghost' = Prune(ghost, kv')
    /\ UNCHANGED <<now, lc, up, paused, role, epoch, myRev, deadline, lastSend, seen, seenAt, probe, wpos, req>>
    /\ UNCHANGED <<kvUp, env, client>>

SilentExpire ==        \* without a stream leader a message can expire with no marker at all
    /\ ~kvUp
    /\ kv.kind = "val"
    /\ now - kv.wAt >= TTL
    /\ kv' = NoKey
    /\ prev' = kv
    /\ ghost' = Prune(ghost, kv')
    /\ UNCHANGED <<now, lc, up, paused, role, epoch, myRev, deadline, lastSend, seen, seenAt, probe, wpos, req>>
    /\ UNCHANGED <<seq, kvUp, env, client>>

MarkerGone ==          \* a delete/expiry marker ages out (MarkerTTL <= key TTL): the key is absent
    /\ kv.kind \in {"del", "exp"}
    /\ now - kv.wAt >= MarkerTTL
    /\ kv' = NoKey
    /\ prev' = kv
    /\ ghost' = Prune(ghost, kv')
    /\ UNCHANGED <<now, lc, up, paused, role, epoch, myRev, deadline, lastSend, seen, seenAt, probe, wpos, req>>
    /\ UNCHANGED <<seq, kvUp, env, client>>

KVDown ==              \* the stream loses its leader (4-9 s in NATS)
    /\ kvUp
    /\ outages < MaxOutages
    /\ outages' = outages + 1
    /\ kvUp' = FALSE
    /\ downAt' = now
    /\ UNCHANGED <<now, inst, kv, prev, seq, crashes, pauses, releases, cuts, cut, client>>

(* One instance loses its connection to the KV (its requests, answers and *)
(* watch), while the KV serves the others; later it is healed.            *)
CutOff(i) ==
    /\ cuts < MaxCuts
    /\ cuts' = cuts + 1
    /\ cut' = cut \cup {i}
    /\ UNCHANGED <<now, inst, store, crashes, pauses, outages, releases, downAt, client>>

Heal(i) ==
    /\ i \in cut
    /\ cut' = cut \ {i}
    /\ UNCHANGED <<now, inst, store, crashes, pauses, outages, releases, cuts, downAt, client>>

KVRecover ==
    /\ ~kvUp
    /\ now - downAt >= OutageMin
    /\ kvUp' = TRUE
    /\ UNCHANGED <<now, inst, kv, prev, seq, env, client>>

-----------------------------------------------------------------------------
(* Exclusive calls and a client. A call is admitted only while its      *)
(* instance serves, under one epoch: the instance's epoch at admission.  *)
(* Its handler may then take any time (the instance may meanwhile lose    *)
(* its lease, be paused, learn newer epochs); a crash kills it. When it   *)
(* finishes, the reply goes out stamped with the admission epoch, and     *)
(* only if the instance still serves under that epoch (role active, its   *)
(* clock before its deadline, the same epoch); otherwise the caller gets  *)
(* LeaseLost, not a success. (The model ends the call there: the sticky   *)
(* client's retry on the new active is a later call.) Replies can be      *)
(* delayed and overtaken. The client routes by the newest epoch it        *)
(* discovered and drops replies from older epochs than it accepted.       *)
(* At most MaxCalls calls and replies are in flight at once.              *)

InFlight == Cardinality({i \in Inst : call[i] # 0}) + Cardinality(replies)

Admit(i) ==
    /\ WithClient
    /\ Runs(i)
    /\ Serving(i)
    /\ call[i] = 0
    /\ InFlight < MaxCalls
    /\ call' = [call EXCEPT ![i] = epoch[i]]
    /\ UNCHANGED <<now, inst, store, env, replies, cliEpoch, cliStale, cliForged>>

(* The epochs the reply header of the SDK before issue 12 could hold when *)
(* a call finishes: set on acquire, rewritten by the watch with the epoch  *)
(* of each value it delivers. So: the epoch the call was admitted under,   *)
(* or the newer one in the key's current value (the watch may have        *)
(* delivered it just now). (Fewer cases than the SDK had, e.g. not a later *)
(* acquire of its own: enough for a negative control, and every epoch here *)
(* is one the view keeps.)                                                 *)
HeaderEpochs(i) ==
    {call[i]} \cup (IF kv.kind = "val" /\ kv.ep > call[i] THEN {kv.ep} ELSE {})

(* A success stamped e is fenced when its call was admitted under e and,  *)
(* as it is produced, its producer still serves under e, e is the newest  *)
(* epoch that ever served, and no other instance served at any moment     *)
(* since the call was admitted: the handler ran within e's tenure.        *)
Fenced(i, e) ==
    /\ e = call[i]
    /\ Serving(i) /\ epoch[i] = e
    /\ hiServed = e
    /\ i \notin overlapped

Complete(i) ==
    /\ WithClient
    /\ Runs(i)
    /\ call[i] # 0
    /\ call' = [call EXCEPT ![i] = 0]
    /\ \E e \in IF ReplyRule = "current" THEN HeaderEpochs(i) ELSE {call[i]} :
          IF ReplyRule = "fenced" /\ ~(Serving(i) /\ epoch[i] = call[i])
          THEN UNCHANGED replies        \* LeaseLost: an error, not a success
          ELSE replies' = replies \cup {[ep |-> e, ok |-> Fenced(i, e)]}
    /\ UNCHANGED <<now, inst, store, env, cliEpoch, cliStale, cliForged>>

Deliver ==
    /\ WithClient
    /\ \E r \in replies :
          /\ replies' = replies \ {r}
          /\ IF ClientCheck /\ r.ep < cliEpoch
             THEN UNCHANGED <<cliEpoch, cliStale, cliForged>>
             ELSE /\ cliEpoch' = Max(cliEpoch, r.ep)
                  /\ cliStale' = (cliStale \/ r.ep < cliEpoch)
                  /\ cliForged' = (cliForged \/ ~r.ok)
    /\ UNCHANGED <<now, inst, store, env, call>>

Discover ==            \* the client reads the key to learn the current epoch
    /\ WithClient
    /\ kvUp
    /\ kv.kind = "val"
    /\ kv.ep > cliEpoch
    /\ cliEpoch' = kv.ep
    /\ UNCHANGED <<now, inst, store, env, call, replies, cliStale, cliForged>>

-----------------------------------------------------------------------------
(* History variables, updated by every step *)

Calm == kvUp /\ cut = {} /\ \A j \in Inst : up[j] => ~paused[j]

History ==
    /\ hiServed' = LET es == {epoch'[i] : i \in {j \in Inst : Serving(j)'}} \cup {hiServed}
                   IN CHOOSE m \in es : \A x \in es : x <= m
    /\ fo' = IF SomeServing'
             THEN NoFo
             ELSE IF \E i \in Inst : /\ Serving(i) /\ ~up'[i] /\ Calm'
                                     /\ \E j \in Inst \ {i} : up'[j] /\ role'[j] = "standby"
             THEN [k |-> "crash", t |-> 0]
             ELSE IF \E i \in Inst : /\ Serving(i) /\ role'[i] = "releasing" /\ Calm'
                                     /\ \E j \in Inst \ {i} : up'[j] /\ role'[j] = "standby"
             THEN [k |-> "release", t |-> 0]
             ELSE IF /\ OutageMax > 0 /\ ~kvUp /\ Calm'
                     /\ \E i \in Inst : up'[i] /\ role'[i] = "active"
             THEN [k |-> "outage", t |-> 0]     \* back from a bounded outage, the incumbent alive
             ELSE IF \/ fo.k = "none"
                     \/ ~Calm'
                     \/ crashes' > crashes
                     \/ ~\E j \in Inst : up'[j] /\ role'[j] # "releasing"
                     \/ fo.k = "outage" /\ (releases' > releases \/ pauses' > pauses)
             THEN NoFo
             ELSE [fo EXCEPT !.t = fo.t + (now' - now)]
    /\ failover' = (OutageMax > 0 /\ (failover \/ (hiServed # 0 /\ hiServed' # hiServed)))
    /\ overlapped' = {i \in Inst : /\ call'[i] # 0
                                   /\ \/ i \in overlapped /\ call[i] # 0
                                      \/ \E j \in Inst \ {i} : Serving(j)'}

-----------------------------------------------------------------------------
Step ==
    \/ Tick
    \/ \E i \in Inst :
          \/ Start(i) \/ Probe(i) \/ SendRenew(i) \/ Release(i) \/ Answer(i) \/ Observe(i)
          \/ Crash(i) \/ Pause(i) \/ Resume(i)
          \/ Apply(i) \/ ApplyGhost(i) \/ Drop(i) \/ DropGhost(i)
          \/ Admit(i) \/ Complete(i) \/ CutOff(i) \/ Heal(i)
    \/ Expire \/ SilentExpire \/ MarkerGone \/ KVDown \/ KVRecover
    \/ Deliver \/ Discover

Next == Step /\ History

(* Timely steps happen; faults (crash, pause, outage, release) need not.  *)
Fairness ==
    /\ SF_vars(Tick /\ History)
    /\ \A i \in Inst : WF_vars((Probe(i) \/ SendRenew(i) \/ Answer(i) \/ Observe(i)) /\ History)
    /\ \A i \in Inst : WF_vars((Apply(i) \/ ApplyGhost(i) \/ Resume(i)) /\ History)
    /\ WF_vars(Expire /\ History)
    /\ WF_vars(KVRecover /\ History)
    /\ \A i \in Inst : WF_vars(Heal(i) /\ History)

Spec == Init /\ [][Next]_vars
FairSpec == Spec /\ Fairness

-----------------------------------------------------------------------------
(* Properties *)

TypeOK ==
    /\ now \in Nat
    /\ lc \in [Inst -> Nat]
    /\ up \in [Inst -> BOOLEAN] /\ paused \in [Inst -> BOOLEAN]
    /\ role \in [Inst -> {"standby", "active", "releasing"}]
    /\ probe \in [Inst -> BOOLEAN]
    /\ \A i \in Inst : req[i].op \in {"none", "read", "acquire", "renew", "release"}
    /\ \A i \in Inst : req[i].st \in {"none", "sent", "ok", "fail", "timeout"}
    /\ \A i \in Inst : ghost[i].st \in {"none", "sent"} /\ ghost[i].op # "read"
    /\ kv.kind \in Kinds /\ prev.kind \in Kinds
    /\ kv.rev <= seq /\ prev.rev <= seq
    /\ fo.k \in {"none", "crash", "release", "outage"}
    /\ cut \subseteq Inst /\ failover \in BOOLEAN
    /\ call \in [Inst -> Nat]
    /\ replies \subseteq [ep : Nat, ok : BOOLEAN]
    /\ overlapped \subseteq Inst

(* Safety: never two instances serving at the same real time. *)
NoOverlap == \A i, j \in Inst : (i # j) => ~(Serving(i) /\ Serving(j))

(* An instance that serves holds the newest epoch that has ever served:   *)
(* epochs order the serving periods, so they work as fencing tokens.      *)
ServingHoldsNewestEpoch == \A i \in Inst : Serving(i) => epoch[i] = hiServed

(* The client never accepts a reply from an older epoch after a newer one. *)
(* (With ClientCheck this is the client's filter itself; its negative    *)
(* control shows the filter is needed.)                                   *)
ClientNeverGoesBack == ~cliStale

(* Every success reply the client accepts is fenced (Fenced above): its   *)
(* producer admitted the call under the reply's epoch e, still served     *)
(* under e when it produced the reply, e was the newest epoch that had    *)
(* served, and no other instance served while the handler ran. An order  *)
(* gateway that fences by epoch can trust a success: it was produced in   *)
(* e's tenure, after every older epoch's work and before any newer one's. *)
AcceptedRepliesFenced == ~cliForged

(* Refinement: this protocol is an implementation of the abstract         *)
(* single-active service (SingleActive.tla): who serves is Serving, the   *)
(* token is the epoch, the newest that served is hiServed, the success    *)
(* replies produced are those in flight to the client.                    *)
Abstract == INSTANCE SingleActive WITH
                serving <- [i \in Inst |-> Serving(i)],
                token <- epoch,
                hi <- hiServed,
                out <- {r.ep : r \in replies}
Refines == Abstract!Spec

(* Bounded failover and bounded handover, checked on the history clock fo; *)
(* with bounded outages (OutageMax > 0) bounded recovery after an outage.  *)
FailoverBounded ==
    /\ fo.k = "crash" => fo.t <= FailoverBound
    /\ fo.k = "release" => fo.t <= ReleaseBound
    /\ fo.k = "outage" => fo.t <= OutageRecoveryBound

(* The bounds are tight: each minus one tick is violated (negative controls *)
(* check these, which must fail).                                          *)
FailoverBelowBound == fo.k = "crash" => fo.t < FailoverBound
HandoverBelowBound == fo.k = "release" => fo.t < ReleaseBound
RecoveryBelowBound == fo.k = "outage" => fo.t < OutageRecoveryBound

(* A KV outage shorter than the key's TTL (OutageMax > 0) causes no        *)
(* failover: when it is the only fault, the epoch that served before it   *)
(* serves after it.                                                       *)
OutageCausesNoFailover == (crashes = 0 /\ pauses = 0 /\ releases = 0 /\ cuts = 0) => ~failover

(* Epochs strictly increase from one serving period to the next: an     *)
(* instance that serves with an epoch other than the last one that served *)
(* has a newer one. (An instance may still take in a late "acquired"     *)
(* answer for an old epoch; its window has run out by then, so it never  *)
(* serves with it, and its first renewal fails.)                         *)
EpochsStrictlyIncrease ==
    [][\A i \in Inst : (Serving(i)' /\ epoch'[i] # hiServed) => epoch'[i] > hiServed]_vars

(* Liveness under fairness: once the KV stays available and some instance *)
(* stays up (faults have a budget, so they end), an instance serves, and  *)
(* serves again and again. With coarse ticks a renewal can leave a gap of *)
(* a few steps inside a tick, hence []<> rather than <>[]; KeepsServing   *)
(* is the stronger form for parameters that leave room for the renewal   *)
(* round trip inside the window.                                         *)
EventuallyServes ==
    <>[](kvUp /\ \E i \in Inst : up[i]) => []<>SomeServing

KeepsServing ==
    <>[](kvUp /\ \E i \in Inst : up[i]) => <>[]SomeServing

-----------------------------------------------------------------------------
(* The view: what the future depends on. Time only matters as saturated   *)
(* differences; revisions only by their order (a new revision is always   *)
(* larger than every stored one), so they are replaced by their rank.     *)

(* Revisions that can still influence the future (a request's expected *)
(* revision only while it is in flight, and so on).                      *)
QRevs(q) ==
    (IF q.st \in {"sent", "fail"} /\ q.op # "read" THEN {q.exp} ELSE {})
    \cup (IF q.st = "sent" /\ q.op = "renew" THEN {q.ep} ELSE {})
    \cup (IF q.st \in {"ok", "fail"} THEN {q.rev} ELSE {})

Relevant(i) ==
    QRevs(ghost[i])
    \cup IF ~up[i] THEN {}
         ELSE QRevs(req[i])
              \cup (IF role[i] = "active" THEN {epoch[i], myRev[i]} ELSE {})
              \cup (IF role[i] = "releasing" THEN {epoch[i]} ELSE {})
              \cup (IF role[i] = "standby" THEN {seen[i].rev} ELSE {})

PrevMatters == prev.kind \in {"val", "del", "exp"} /\ \E i \in Inst : up[i] /\ wpos[i] < prev.rev

Revs == {0, kv.rev, kv.ep, hiServed}
        \cup (IF WithClient THEN {cliEpoch} \cup {r.ep : r \in replies} \cup {call[i] : i \in Inst} ELSE {})
        \cup (IF PrevMatters THEN {prev.rev} ELSE {})
        \cup UNION {Relevant(i) : i \in Inst}

SentCap == Max(Window, RenewEvery)

(* How long ago the key was written, as far as expiry and watch delays care. *)
KvAge ==
    CASE kv.kind = "val" -> Min(now - kv.wAt, IF Timely THEN TTL + ExpiryLate ELSE TTL)
      [] kv.kind \in {"del", "exp"} -> Min(now - kv.wAt, MarkerTTL)
      [] OTHER -> 0

QView(q, i, ghostly, rk) ==
    IF q.op = "none" THEN <<>>
    ELSE <<q.op, q.st,
           IF q.st \in {"sent", "fail"} /\ q.op # "read" THEN rk[q.exp] ELSE 0,
           \* a timed-out probe or campaign puts i in probe mode only if it learnt nothing newer since
           ~ghostly /\ q.op \in {"read", "acquire"} /\ seen[i].rev = q.exp,
           IF q.op = "renew" /\ q.st = "sent" THEN rk[q.ep] ELSE 0,
           IF q.st \in {"ok", "fail"} THEN rk[q.rev] ELSE 0,
           q.kind, q.st = "fail" /\ q.cep = epoch[i] /\ ~ghostly,
           \* the send time only matters for the window (and schedule) a success will start
           IF ghostly \/ q.op \in {"release", "read"} \/ q.st \in {"fail", "timeout"} THEN 0
           ELSE Min(lc[i] - q.sentAt, SentCap),
           IF Timely THEN Min(now - q.t, IF q.st = "sent" /\ ~ghostly THEN Max(QDelay(q), WriteTimeout)
                                         ELSE NetDelay)
           ELSE 0>>

IView(i, rk) ==
    IF ~up[i] THEN <<"down", QView(ghost[i], i, TRUE, rk)>>
    ELSE <<role[i], paused[i], QView(req[i], i, FALSE, rk), QView(ghost[i], i, TRUE, rk),
           \* what the watch can still deliver: only kv and prev can be newer than wpos[i]
           kv.rev > wpos[i], prev.rev > wpos[i],
           CASE role[i] = "active" ->
                  <<rk[epoch[i]], rk[myRev[i]],
                    IF Fencing THEN Min(Max(deadline[i] - lc[i], 0), Window) ELSE 0,
                    Min(lc[i] - lastSend[i], RenewEvery)>>
             [] role[i] = "releasing" -> <<rk[epoch[i]]>>
             [] OTHER ->
                  <<rk[seen[i].rev], seen[i].kind, probe[i],
                    \* in probe mode every way out restarts the timer: only RenewEvery matters
                    IF probe[i] THEN Min(lc[i] - seenAt[i], RenewEvery)
                    ELSE IF seen[i].kind = "val" THEN Min(lc[i] - seenAt[i], Lease) ELSE Lease>> >>

View ==
    LET rv == Revs
        rk == [v \in rv |-> Cardinality({x \in rv : x < v})]
    IN << [i \in Inst |-> IView(i, rk)],
          <<rk[kv.rev], kv.kind, rk[kv.ep], KvAge>>,
          IF PrevMatters THEN <<rk[prev.rev], prev.kind>> ELSE <<>>,
          kvUp, crashes, pauses, outages, releases, cuts, cut,
          IF ~kvUp THEN Min(now - downAt, Max(OutageMin, IF Timely THEN OutageMax ELSE 0)) ELSE 0,
          failover,
          IF WithClient
          THEN <<[i \in Inst |-> rk[call[i]]], {<<rk[r.ep], r.ok>> : r \in replies}, rk[cliEpoch],
                 cliStale, cliForged, overlapped>>
          ELSE <<>>,
          rk[hiServed],
          <<fo.k, Min(fo.t, Max(Max(FailoverBound, ReleaseBound), OutageRecoveryBound) + 1)>> >>

=============================================================================
