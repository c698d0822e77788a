----------------------------- MODULE TraceLease -----------------------------
(***************************************************************************)
(* Trace validation: does some behaviour of Lease produce this trace?      *)
(*                                                                         *)
(* `aegis/spec/trace_check.py` turns an NDJSON trace (aegis/sdk/trace_events.py)       *)
(* into the module TraceData: `Trace`, a sequence of records               *)
(*   [line, i, a, op, rev, ep, kind, now, lc]  (kind "any": not logged)    *)
(* with times already in ticks (`now`, from wall time) and local units     *)
(* (`lc`, from the instance's monotonic clock, aligned to wall time at its *)
(* first event), plus TraceWindow (the serving window in local units with  *)
(* the rounding tolerance). TLC explores every behaviour of Lease that     *)
(* matches the trace event by event; between two events it may take any   *)
(* number of silent KV steps (a write landing, an expiry, an outage, a     *)
(* lost answer), which no instance logs, and silent probes: the SDK does   *)
(* not log a probe; its read shows as an `observe` line only when it saw   *)
(* the key move, and its campaign as the `request` line of the acquire.    *)
(*                                                                         *)
(* `l` is the index of the next event to explain. The invariant            *)
(* TraceNotFinished is violated exactly when the whole trace is explained. *)
(* Otherwise the checker reads the largest `l` reached from the            *)
(* <<"reached", l>> lines this module prints (TLC 2.15 has no              *)
(* POSTCONDITION); Trace[l] is the first event no behaviour explains.      *)
(***************************************************************************)
EXTENDS Lease, TraceData

VARIABLES
    l,          \* index of the next trace event to explain
    anchor      \* anchor[i]: <<now, lc>> at i's last logged clock reading

tvars == <<vars, l, anchor>>

ASSUME TLCSet(1, 0)

(* The trace fixes time. Before an event of instance i, time jumps to the  *)
(* event: real time to its wall clock, i's clock to its local reading,     *)
(* every other clock on at the nominal rate (their readings are unknown    *)
(* until their next event). i's reading must be one a clock within the     *)
(* drift bound can show since its last reading, give or take one tick.  *)
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
    /\ UNCHANGED <<up, paused, role, epoch, myRev, deadline, lastSend, seen, seenAt, probe, wpos, req, ghost>>
    /\ UNCHANGED <<store, env, client>>

(* Outages start only where the trace shows one, and end only where the  *)
(* trace needs them to. A request that timed out is the only trace of an  *)
(* outage; its window runs from the instance's last event before that     *)
(* request to the timeout (computed from the trace). Where two or more    *)
(* instances are in such windows at once the KV itself may go down       *)
(* (OutageWindows: the stream lost its leader); where one instance is in  *)
(* one alone, that instance may be cut off from the KV while it serves    *)
(* the others (CutWindows: <<instance, from, to>>, a partitioned node).   *)
(* The two explain the same timeouts, so they never overlap: TLC searches *)
(* one explanation, not every mix. Anywhere else a silent outage would    *)
(* only multiply the search.                                              *)
OutageMayStart == \E w \in OutageWindows : w[1] <= now /\ now <= w[2]
CutMayStart(i) == ~OutageMayStart /\ \E w \in CutWindows : w[1] = i /\ w[2] <= now /\ now <= w[3]

(* The KV comes back (an instance is healed) only right before a line     *)
(* that shows it answering (UpLines: a start, an answer, a watch          *)
(* delivery; for a heal, a line of the healed instance). Coming back      *)
(* earlier explains nothing more: whatever landed in between is seen      *)
(* first by such a line, and a write sent in an outage may still land     *)
(* later (a ghost). Toggling up and down between lines only multiplied    *)
(* the search.                                                            *)
UpNext == l \in UpLines
HealNext(i) == l \in UpLines /\ Trace[l].i = i

(* Writes to other keys of the election bucket take stream sequence       *)
(* numbers too: a probe's scratch key, the marker its expiry leaves, other *)
(* groups' keys. Lease leaves them out (revisions only matter by their     *)
(* order); here the stream may count up silently, but only below the next  *)
(* revision the trace names, so the search stays small and a trace without *)
(* gaps (a hand-written one) has none. NextNamedAfter[s + 1] is the      *)
(* smallest revision the trace names above s (computed by trace_check.py: *)
(* a search of the trace per state made long traces slow).               *)
NextNamed == IF seq < Len(NextNamedAfter) THEN NextNamedAfter[seq + 1] ELSE seq

OtherWrite ==
    /\ kvUp /\ UpNext      \* where a line shows the KV: any earlier would only multiply states
    /\ seq + 1 < NextNamed
    /\ seq' = seq + 1
    /\ UNCHANGED <<now, inst, kv, prev, kvUp, env, client>>

(* Steps nobody logs: the KV at work, its outages, writes to other keys,  *)
(* and probes (the SDK logs neither a probe nor its answer, unless the     *)
(* answer campaigns: that is the `request` line of the acquire).           *)
(* Writes land (and reads are answered) only right before a line that    *)
(* shows the KV: that line, or a later one, is the first to see it, and   *)
(* landing earlier differs only in the write's time, which matters to an  *)
(* expiry a TTL later. A new cut needs the KV up (while it is down, a cut  *)
(* explains nothing more); an instance cut earlier may stay cut through an *)
(* outage (an instance cut from its server, then the stream's leader lost).*)
Silent ==
    \/ \E i \in Inst : ((Apply(i) \/ ApplyGhost(i)) /\ UpNext) \/ Drop(i) \/ DropGhost(i)
    \/ \E i \in Inst : Probe(i) \/ (Answer(i) /\ req[i].op = "read" /\ req'[i].op # "acquire")
    \/ Expire \/ SilentExpire \/ MarkerGone \/ OtherWrite
    \/ (KVDown /\ OutageMayStart) \/ (KVRecover /\ UpNext)
    \/ \E i \in Inst : (CutOff(i) /\ kvUp /\ CutMayStart(i)) \/ (Heal(i) /\ HealNext(i))

(* The protocol step that event e records. *)
Explains(e) ==
    LET i == e.i
        q == req[i]
    IN CASE e.a = "start" ->
                \* the start's read may have been answered just before the key's last write
                \E x \in {kv, prev} : x.rev = e.rev /\ x.kind = e.kind /\ StartFrom(i, [rev |-> x.rev, kind |-> x.kind])
         \* a campaign is sent when the answer of a probe's read comes back
         [] e.a = "request" /\ e.op = "acquire" ->
                Answer(i) /\ q.op = "read" /\ req'[i].op = "acquire" /\ req'[i].exp = e.rev
         [] e.a = "request" /\ e.op = "renew" -> SendRenew(i) /\ myRev[i] = e.rev
         [] e.a = "request" /\ e.op = "release" ->
                \/ Release(i) /\ myRev[i] = e.rev
                \/ Answer(i) /\ q.op = "release" /\ q.st = "fail" /\ q.rev = e.rev /\ up'[i]
         [] e.a = "acquire" -> Answer(i) /\ q.op = "acquire" /\ q.st = "ok" /\ q.rev = e.rev /\ e.ep = e.rev
         [] e.a = "renew" -> Answer(i) /\ q.op = "renew" /\ q.st = "ok" /\ q.rev = e.rev /\ epoch[i] = e.ep
         [] e.a = "adopt" -> Answer(i) /\ q.op = "renew" /\ q.st = "fail" /\ q.rev = e.rev /\ role'[i] = "active"
         [] e.a = "lose" -> Answer(i) /\ q.op = "renew" /\ q.st = "fail" /\ q.rev = e.rev /\ role'[i] = "standby"
                            /\ e.kind \in {"any", q.kind}
         [] e.a = "outbid" -> Answer(i) /\ q.op = "acquire" /\ q.st = "fail" /\ q.rev = e.rev
                              /\ e.kind \in {"any", q.kind}
         [] e.a = "timeout" -> Answer(i) /\ q.st = "timeout" /\ e.op \in {"none", q.op}
         [] e.a = "release" -> Answer(i) /\ q.op = "release" /\ ~up'[i]
                               /\ (e.rev = 0 \/ (q.st = "ok" /\ q.rev = e.rev))
         [] e.a = "serve" -> Serving(i) /\ ~paused[i] /\ epoch[i] = e.ep /\ UNCHANGED vars
         [] e.a = "observe" ->
                \* an active's watch delivers its own writes too; the spec's active ignores them
                IF role[i] = "standby" /\ up[i]
                THEN \/ /\ Observe(i) /\ wpos'[i] = e.rev
                        \* the key's value or the one before it, or an older value (StaleWatch)
                        /\ \/ \E x \in {kv, prev} : x.rev = e.rev /\ x.kind = e.kind
                           \/ e.kind = "val" /\ e.rev < prev.rev
                     \* a probe's read saw the key move (the SDK logs it before it handles the answer)
                     \/ /\ Runs(i) /\ q.op = "read" /\ q.st = "ok" /\ q.rev = e.rev /\ q.kind = e.kind
                        /\ q.rev > seen[i].rev
                        /\ UNCHANGED vars
                ELSE \* ... and a process that released the key may log its watch until it has exited
                     (Runs(i) \/ ~up[i]) /\ UNCHANGED vars
         [] e.a = "crash" -> Crash(i)
         [] e.a = "pause" -> Pause(i)
         [] e.a = "resume" -> Resume(i)
         [] OTHER -> FALSE

TraceInit == Init /\ l = 1 /\ anchor = [i \in Inst |-> <<0, 0>>]

TraceNext ==
    /\ l <= Len(Trace)
    \* silent steps happen at the time of the next event (after its JumpTo): a write that landed
    \* between two events differs only in its write time, which matters to nothing but an expiry
    \* a TTL (seconds) later
    /\ \/ /\ now = Trace[l].now /\ lc[Trace[l].i] = Trace[l].lc
          /\ Silent /\ History /\ l' = l /\ UNCHANGED anchor
       \/ JumpTo(Trace[l]) /\ History /\ l' = l
       \/ /\ now = Trace[l].now /\ lc[Trace[l].i] = Trace[l].lc
          /\ Explains(Trace[l]) /\ History
          /\ l' = l + 1 /\ UNCHANGED anchor
    \* a behaviour that puts two instances in service at once explains nothing
    /\ NoOverlap'

TraceSpec == TraceInit /\ [][TraceNext]_tvars

(* Violated exactly when every event has been explained. *)
TraceNotFinished == l <= Len(Trace)

(* A CONSTRAINT that never prunes: it prints each new largest `l`.        *)
TrackProgress ==
    IF l > TLCGet(1) THEN TLCSet(1, l) /\ PrintT(<<"reached", l>>) ELSE TRUE


(* The trace view: what the rest of the trace can depend on. The trace    *)
(* fixes absolute time, clocks and revisions, so those stay as they are;  *)
(* of the rest, the model-checking View's abstraction of instances and    *)
(* key (saturated time differences), with revisions not ranked (identity). *)
(* `outages` and `cuts` are left out: the windows bound them, not a count *)
(* (trace_check.py sets MaxOutages and MaxCuts beyond reach). `fo` feeds  *)
(* only the failover-bound property, which a trace check does not check.  *)
TraceRevs == Revs \cup {seq}
Ident == [v \in TraceRevs |-> v]
TraceView ==
    << l, anchor, now, lc, seq,
       [i \in Inst |-> IView(i, Ident)],
       <<kv.rev, kv.kind, kv.ep, KvAge>>,
       IF PrevMatters THEN <<prev.rev, prev.kind>> ELSE <<>>,
       kvUp, cut, crashes, pauses, releases, hiServed >>

=============================================================================
