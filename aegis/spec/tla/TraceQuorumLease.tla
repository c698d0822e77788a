-------------------------- MODULE TraceQuorumLease --------------------------
(***************************************************************************)
(* Trace validation of the quorum lease: does some behaviour of           *)
(* QuorumLease produce this trace? (TraceLease.tla does the same for      *)
(* Lease.tla.)                                                             *)
(*                                                                         *)
(* `aegis/spec/trace_check.py` turns an NDJSON trace of the quorum lease  *)
(* (aegis/sdk/trace_events.py, written by aegis/sdk/quorum_driver.py) into *)
(* the module TraceData: `Trace`, a sequence of records                   *)
(*   [line, i, a, op, b, bal, fl, hold, rel, kind, ep, now, lc, fst,     *)
(*    nm, fr, ld, pd]                                                      *)
(* (b: the bucket, 1..3, 0 for none; bal, fl, hold, rel: the record read  *)
(* or written; fst: the first line of a start; nm: the line names a      *)
(* revision of b; fr: the first line naming it, see Names and Naming; ld: *)
(* a write lands right before it (fr, or an ack naming its own write      *)
(* first), see SPause; pd: a timed-out write may land later, see Silent), *)
(* with times in ticks and                                                 *)
(* local units as in TraceLease; TraceWindow (the serving window with the *)
(* rounding tolerance); InitKV, InitSeq: what the buckets held when the   *)
(* first instance started (records of earlier runs: TraceInit is Init but *)
(* for these and every instance not yet started, a state TLC does not     *)
(* re-check is reachable); InstSeq: the instances in one order.           *)
(*                                                                         *)
(* TLC explores every behaviour of QuorumLease that matches the trace     *)
(* event by event. Revisions are not compared (the spec numbers writes    *)
(* across the three buckets, NATS per bucket): the spec's own             *)
(* compare-and-set decides which write is acknowledged and which refused, *)
(* and the trace's outcome (ack, refuse, timeout) must be the spec's; the *)
(* records (holder, ballot, floor, released) and the epochs must be the   *)
(* spec's.                                                                 *)
(*                                                                         *)
(* Between two events, silent steps nobody logs, only where the next     *)
(* event shows a need for them (each restriction can only make TLC reject *)
(* more, never explain a trace the unrestricted search would not):        *)
(*  - a write lands before its writer takes in the answer (the spec's     *)
(*    Pause, Apply, Resume of the writer, all at one instant: the spec    *)
(*    takes a request's landing and its answer as one step, Round, unless *)
(*    the writer is paused), only right before the first line that names  *)
(*    its revision (Names);                                               *)
(*  - a write nobody waits for (its writer crashed, or its request timed   *)
(*    out) lands (ApplyPend), only right before the first line naming it; *)
(*  - a bucket's stream leader is lost (NodeCrash) and a request there    *)
(*    gets no answer (Drop), only right before the timeout line of that   *)
(*    request; the bucket comes back (Recover) only right before an event *)
(*    about it.                                                            *)
(* Everything else is a logged step: the SDK logs every event its machine *)
(* takes in and every write it sends (aegis/sdk/quorum_driver.py).        *)
(*                                                                         *)
(* Watches: the spec delivers a write to every running instance as it     *)
(* lands (ObsDelay = 0); the SDK's watch delivers it a little later, to    *)
(* each instance at its own time. A write lands right before the first    *)
(* line naming it, with every other instance paused for that instant      *)
(* (SPause: a behaviour of the spec), so each learns it at its own        *)
(* `observe` line (Observe), as the SDK did. An `observe` line of a        *)
(* record that is not the bucket's newest (the SDK's watch lags behind)   *)
(* only checks that it landed (Landed).                                   *)
(*                                                                         *)
(* `l` is the index of the next event to explain. TraceNotFinished is     *)
(* violated exactly when the whole trace is explained; otherwise the      *)
(* checker reads the largest `l` reached from the <<"reached", l>> lines. *)
(***************************************************************************)
EXTENDS QuorumLease, TraceData

VARIABLES
    l,          \* index of the next trace event to explain
    anchor,     \* anchor[i]: <<now, lc>> at i's last logged clock reading
    lg,         \* lg[i][b]: the request of i to b that a `request` line has named (its Tag)
    spause,     \* spause[i]: i is in a silent pause (a write of its landing before its answer)
    nl,         \* nl[b]: the spec's revision of b when the last line naming a revision of b was explained
    bhist       \* bhist[b]: every record b has held since the trace began, as a line names one (Named)

tvars == <<vars, l, anchor, lg, spause, nl, bhist>>

ASSUME TLCSet(1, 0)

(* Time, as in TraceLease: before an event of instance i, real time jumps *)
(* to its wall clock, i's clock to its reading, every other clock on at   *)
(* the nominal rate; i's reading must be one a clock within the drift     *)
(* bound can show since its last reading, give or take one tick.          *)
ClockOK(e) ==
    LET d == e.now - anchor[e.i][1]
        expect == anchor[e.i][2] + Rate * d
    IN /\ e.now >= now
       /\ e.lc >= anchor[e.i][2]
       /\ e.lc - expect <= DriftBound * d + Rate
       /\ expect - e.lc <= DriftBound * d + Rate

JumpTo(e) ==
    /\ now # e.now \/ lc[e.i] # e.lc
    /\ ClockOK(e)
    /\ now' = e.now
    /\ lc' = [j \in Inst |-> IF j = e.i THEN e.lc ELSE lc[j] + Rate * (e.now - now)]
    /\ anchor' = [anchor EXCEPT ![e.i] = <<e.now, e.lc>>]
    /\ UNCHANGED <<up, paused, role, bal, epoch, seen, seenAt, held, sent, lastSend, req, kinc, qAt, boUntil>>
    /\ UNCHANGED <<soloist, store, env, lg, spause, nl>>

-----------------------------------------------------------------------------
(* Requests and records as the trace names them *)

Tag(q) == <<q.op, q.exp, q.rec, q.sentAt, q.t>>
(* A request the spec sent that no `request` line has named yet: the SDK  *)
(* writes one line per write it sends, right after the step that sent it, *)
(* so an instance's other lines wait until each of its requests is named. *)
Unlogged(i, b) == req[i][b].st = "sent" /\ lg[i][b] # Tag(req[i][b])
AllLogged(i) == \A b \in Buckets : ~Unlogged(i, b)

Rel(e) == e.rel = "yes"
ReqOK(q, e) ==
    /\ q.op = e.op
    /\ q.rec.holder = e.i /\ q.rec.bal = e.bal /\ q.rec.floor = e.fl /\ q.rec.rel = Rel(e)

RecOK(r, e) ==
    IF e.kind = "none" THEN r.kind = "none"
    ELSE /\ r.kind = "val"
         /\ r.holder = e.hold /\ r.bal = e.bal /\ r.floor = e.fl /\ r.rel = Rel(e)

(* The record a start read or a watch delivered has landed by now: it is   *)
(* the bucket's record (or, when an earlier line already named its         *)
(* revision, any record the bucket has held: a watch that lags behind, as  *)
(* an instance's does while it is cut off, delivers records several        *)
(* writes old, and two duelling candidates may write the same ballot, so   *)
(* the floor need not have moved past it), or a newer ballot was written.  *)
(* (Nothing is ever deleted, so an absent key is older than all.)         *)
Named(r) == <<r.holder, r.bal, r.floor, r.rel>>
Landed(b, e) ==
    \/ e.kind = "none"
    \/ RecOK(kv[b], e)
    \/ ~e.fr /\ e.kind = "val" /\ <<e.hold, e.bal, e.fl, Rel(e)>> \in bhist[b]
    \/ kv[b].floor > e.fl

-----------------------------------------------------------------------------
(* Silent steps, at the time of the next event *)

Next1 == Trace[l]
(* The next event is about bucket b: a start (it reads all three), or a   *)
(* watch delivery or an answer from b.                                    *)
Concerns(b) == Next1.a = "start" \/ (Next1.a \in {"observe", "ack", "refuse"} /\ Next1.b = b)
(* The next event is the first line that names a revision of b (fr,       *)
(* computed by trace_check.py from the trace's revisions: a start's read, *)
(* a watch delivery, or the revision a refused write found) other than    *)
(* the acknowledgement of the write itself: that write landed before it,  *)
(* and landing right before it is the latest it can (every instance then  *)
(* learns it no later than the SDK did). A write whose revision the trace *)
(* names first in its own `ack` line lands in the Round of that line.     *)
Names(b) == Next1.fr /\ Next1.b = b

(* A silent pause, for the instant a write lands at the next line (ld):   *)
(* of its writer, so that it lands (Apply) before the writer takes in the *)
(* answer; and of every other instance but the line's own, so that none   *)
(* learns the write as it lands (the spec's watch, ObsDelay = 0) but each  *)
(* at its own `observe` line, when the SDK's watch delivered it (Observe). *)
(* Their serving windows and free buckets then count from the SDK's own    *)
(* times: learning earlier, a standby would see a bucket free earlier and *)
(* claim more buckets than the SDK did; learning later, fewer.            *)
(* The instances pause and resume one by one in the order of InstSeq      *)
(* (TraceData), skipping any: the same states in every order multiplied    *)
(* the search (each subset of paused instances a state) for nothing.       *)
Earlier == [i \in Inst |-> {InstSeq[k] : k \in 1..((CHOOSE m \in 1..Len(InstSeq) : InstSeq[m] = i) - 1)}]
SPause(i) ==
    /\ ~spause[i]
    /\ Next1.ld
    /\ \A j \in Inst \ Earlier[i] : ~spause[j]
    /\ Pause(i)
    /\ spause' = [spause EXCEPT ![i] = TRUE]
LateOnesAway == \A j \in Inst \ {Next1.i} : paused[j] \/ ~up[j]

SApply(i) ==
    /\ spause[i] /\ LateOnesAway
    /\ \E b \in Buckets : ~Unlogged(i, b) /\ Names(b) /\ Apply(i, b)
    /\ UNCHANGED spause

SResume(i) ==
    /\ spause[i]
    /\ \A j \in Earlier[i] : ~spause[j]
    /\ Resume(i)
    /\ spause' = [spause EXCEPT ![i] = FALSE]

Silent ==
    \/ \E i \in Inst : SPause(i) \/ SApply(i) \/ SResume(i)
    \/ \E b \in Buckets : /\ (Names(b) /\ LateOnesAway /\ ApplyPend(b)) \/ (Concerns(b) /\ Recover(b))
                          /\ UNCHANGED spause
    \* a timed-out write is kept pending (it may land later) only where the trace names a write nobody
    \* was told of with its record (pd, computed by trace_check.py)
    \/ /\ Next1.a = "timeout" /\ Next1.b \in Buckets
       /\ NodeCrash(NodeOf[Next1.b]) \/ (Drop(Next1.i, Next1.b) /\ (Next1.pd \/ UNCHANGED pend))
       /\ UNCHANGED spause

-----------------------------------------------------------------------------
(* The protocol step that event e records *)

Explains(e) ==
    LET i == e.i
        b == e.b
    IN CASE e.a = "start" ->
                \* the three reads of one start are three lines: the first starts the process
                /\ IF e.fst THEN Start(i) ELSE up[i] /\ UNCHANGED vars
                /\ Landed(b, e)
                /\ UNCHANGED <<lg, spause>>
         [] e.a = "observe" ->
                /\ Landed(b, e)
                /\ IF Runs(i) /\ Observable(i, b) /\ RecOK(kv[b], e)
                   THEN Observe(i, b)
                   \* its own write (it goes by its answer), an older record than one it learnt, or a
                   \* delivery before the process started (its start reads again)
                   ELSE (Runs(i) \/ ~up[i]) /\ UNCHANGED vars
                /\ UNCHANGED <<lg, spause>>
         [] e.a = "request" ->
                \/ /\ Unlogged(i, b) /\ ReqOK(req[i][b], e)
                   /\ UNCHANGED vars
                   /\ lg' = [lg EXCEPT ![i][b] = Tag(req[i][b])]
                   /\ UNCHANGED spause
                \* the active's renewal round (rule 5), or a releasing instance's release of a bucket
                \* whose request was answered (rule 7): its other writes are the next lines; or a
                \* candidate's claim of a bucket that went free during its campaign (rule 2)
                \/ /\ AllLogged(i) /\ (SendRenew(i) \/ ReleaseMore(i) \/ ClaimMore(i, b))
                   /\ req'[i][b].st = "sent" /\ ReqOK(req'[i][b], e)
                   /\ lg' = [lg EXCEPT ![i][b] = Tag(req'[i][b])]
                   /\ UNCHANGED spause
         [] e.a = "ack" ->
                /\ AllLogged(i) /\ (e.ld => LateOnesAway)
                /\ \/ req[i][b].st = "sent" /\ req[i][b].exp = kv[b].rev /\ Round(i, b)
                   \/ req[i][b].st = "ok" /\ Answer(i, b)
                /\ UNCHANGED <<lg, spause>>
         [] e.a = "refuse" ->
                /\ AllLogged(i)
                /\ \/ req[i][b].st = "sent" /\ req[i][b].exp # kv[b].rev /\ Round(i, b)
                   \/ req[i][b].st = "fail" /\ Answer(i, b)
                /\ UNCHANGED <<lg, spause>>
         [] e.a = "timeout" ->
                /\ AllLogged(i)
                /\ req[i][b].st = "timeout" /\ req[i][b].op = e.op /\ Answer(i, b)
                /\ UNCHANGED <<lg, spause>>
         [] e.a = "campaign" ->
                /\ AllLogged(i) /\ Campaign(i, FALSE) /\ bal'[i] = e.bal
                /\ UNCHANGED <<lg, spause>>
         [] e.a = "win" -> up[i] /\ role[i] = "active" /\ epoch[i] = e.ep /\ UNCHANGED <<vars, lg, spause>>
         [] e.a = "giveup" -> AllLogged(i) /\ GiveUp(i) /\ UNCHANGED <<lg, spause>>
         [] e.a = "stepdown" ->
                \* after a refused renewal (the answer already made it a standby), or at the end of its
                \* window (rule 6): its releases are the next lines
                \/ up[i] /\ role[i] = "standby" /\ UNCHANGED <<vars, lg, spause>>
                \/ AllLogged(i) /\ Expire(i) /\ UNCHANGED <<lg, spause>>
         [] e.a = "stop" ->
                /\ AllLogged(i)
                /\ Release(i) \/ (Runs(i) /\ role[i] = "standby" /\ UNCHANGED vars)
                /\ UNCHANGED <<lg, spause>>
         [] e.a = "exit" ->
                \* a standby's exit is, to the spec, a crash: it leaves, its requests may still land
                /\ AllLogged(i)
                /\ Exit(i) \/ (Runs(i) /\ role[i] = "standby" /\ Crash(i))
                /\ UNCHANGED <<lg, spause>>
         [] e.a = "serve" -> Serving(i) /\ ~paused[i] /\ epoch[i] = e.ep /\ UNCHANGED <<vars, lg, spause>>
         [] e.a = "crash" -> Crash(i) /\ UNCHANGED lg /\ spause' = [spause EXCEPT ![i] = FALSE]
         [] e.a = "pause" -> ~spause[i] /\ Pause(i) /\ UNCHANGED <<lg, spause>>
         [] e.a = "resume" -> ~spause[i] /\ Resume(i) /\ UNCHANGED <<lg, spause>>
         [] OTHER -> FALSE

(* The spec's initial state, except that no instance has started yet and   *)
(* the buckets hold what the first start read there (records of earlier    *)
(* runs: a state QuorumLease reaches, which TLC does not re-check here).   *)
TraceInit ==
    /\ now = 0
    /\ lc = [i \in Inst |-> 0]
    /\ up = [i \in Inst |-> FALSE]
    /\ paused = [i \in Inst |-> FALSE]
    /\ role = [i \in Inst |-> "standby"]
    /\ bal = [i \in Inst |-> 0]
    /\ epoch = [i \in Inst |-> 0]
    /\ seen = [i \in Inst |-> [b \in Buckets |-> NoRec]]
    /\ seenAt = [i \in Inst |-> [b \in Buckets |-> 0]]
    /\ held = [i \in Inst |-> [b \in Buckets |-> 0]]
    /\ sent = [i \in Inst |-> [b \in Buckets |-> 0]]
    /\ lastSend = [i \in Inst |-> 0]
    /\ req = [i \in Inst |-> [b \in Buckets |-> NoReq]]
    /\ kinc = [i \in Inst |-> [b \in Buckets |-> 0]]
    /\ qAt = [i \in Inst |-> [b \in Buckets |-> -Lease]]
    /\ boUntil = [i \in Inst |-> 0]
    /\ soloist = NoOne
    /\ kv = InitKV
    /\ kvAt = [b \in Buckets |-> 0]
    /\ prev = [b \in Buckets |-> NoRec]
    /\ pend = [b \in Buckets |-> {}]
    /\ seq = InitSeq
    /\ inc = [b \in Buckets |-> 0]
    /\ stalled = {}
    /\ crashes = 0 /\ pauses = 0 /\ releases = 0 /\ nodeCrashes = 0 /\ resets = 0
    /\ hiServed = 0 /\ hiBy = NoOne
    /\ fo = NoFo
    /\ gap = 0
    /\ l = 1
    /\ anchor = [i \in Inst |-> <<0, 0>>]
    /\ lg = [i \in Inst |-> [b \in Buckets |-> <<>>]]
    /\ spause = [i \in Inst |-> FALSE]
    /\ nl = [b \in Buckets |-> InitKV[b].rev]
    /\ bhist = [b \in Buckets |-> IF InitKV[b].kind = "val" THEN {Named(InitKV[b])} ELSE {}]

AtEvent == now = Trace[l].now /\ lc[Trace[l].i] = Trace[l].lc
NoSilentPause == \A i \in Inst : ~spause[i]

(* A line that names a revision of its bucket: its write landed, and it  *)
(* is the bucket's newest named one. A write lands only silently right     *)
(* before the first line naming it (Names), or in the Round of its own     *)
(* `ack` line; so at a line that names a revision first, one landed since  *)
(* the previous naming line of that bucket: the line cannot be explained   *)
(* by a bucket where nothing landed (which would leave the landing to a    *)
(* later line, and multiply the search by every such choice).             *)
Naming(e) ==
    IF e.nm
    THEN /\ e.fr => kv[e.b].rev # nl[e.b]
         /\ nl' = [nl EXCEPT ![e.b] = kv'[e.b].rev]
    ELSE UNCHANGED nl

TraceNext ==
    /\ l <= Len(Trace)
    /\ \/ AtEvent /\ Silent /\ History /\ UNCHANGED <<l, anchor, lg, nl>>
       \* a silent pause lasts an instant: it is over before time moves on or a line of that
       \* instance is explained (another instance's line may land a write in between: its ack)
       \/ \E i \in Inst : SResume(i) /\ History /\ UNCHANGED <<l, anchor, lg, nl>>
       \/ NoSilentPause /\ JumpTo(Trace[l]) /\ History /\ l' = l
       \/ /\ ~spause[Trace[l].i] /\ AtEvent /\ Explains(Trace[l]) /\ Naming(Trace[l]) /\ History
          /\ l' = l + 1 /\ UNCHANGED anchor
    \* a behaviour that puts two instances in service at once explains nothing
    /\ NoOverlap'
    /\ bhist' = [b \in Buckets |-> IF kv'[b].kind = "val" THEN bhist[b] \cup {Named(kv'[b])} ELSE bhist[b]]

TraceSpec == TraceInit /\ [][TraceNext]_tvars

(* Violated exactly when every event has been explained. *)
TraceNotFinished == l <= Len(Trace)

(* A CONSTRAINT that never prunes: it prints each new largest `l`. *)
TrackProgress ==
    IF l > TLCGet(1) THEN TLCSet(1, l) /\ PrintT(<<"reached", l>>) ELSE TRUE

(* The trace view: what the rest of the trace can depend on. The trace    *)
(* fixes time, so absolute times stay; left out: the history variables    *)
(* (no guard reads them), the fault counters whose budgets trace_check.py *)
(* sets beyond reach (pauses, node crashes), resets (none), soloist       *)
(* (always none: only Campaign(i, FALSE) explains a campaign) and kvAt    *)
(* (read only by Timely and Erasable, both off here); a back-off only as   *)
(* what is left of it (GiveUp draws 0 or 1 tick: two states for ever).    *)
TraceView ==
    << l, anchor, lg, spause, nl, bhist, now, lc, up, paused, role, bal, epoch, seen, seenAt, held, sent, lastSend, req,
       kinc, qAt, [i \in Inst |-> Max(boUntil[i] - now, 0)], kv, prev, pend, seq, inc, stalled, crashes, releases >>

=============================================================================
