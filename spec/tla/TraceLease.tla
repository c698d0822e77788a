----------------------------- MODULE TraceLease -----------------------------
(***************************************************************************)
(* Trace validation: does some behaviour of Lease produce this trace?      *)
(*                                                                         *)
(* `harness/trace_check.py` turns an NDJSON trace (sdk/trace_events.py)    *)
(* into the module TraceData: `Trace`, a sequence of records               *)
(*   [line, i, a, op, rev, ep, kind, now, lc]  (kind "any": not logged)    *)
(* with times already in ticks (`now`, from wall time) and local units     *)
(* (`lc`, from the instance's monotonic clock, aligned to wall time at its *)
(* first event), plus TraceWindow (the serving window in local units with  *)
(* the rounding tolerance). TLC explores every behaviour of Lease that     *)
(* matches the trace event by event; between two events it may take any   *)
(* number of silent KV steps (a write landing, an expiry, an outage, a     *)
(* lost answer), which no instance logs.                                   *)
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
    /\ UNCHANGED <<up, paused, role, epoch, myRev, deadline, lastSend, seen, seenAt, wpos, req, ghost>>
    /\ UNCHANGED <<store, env, client>>

(* Steps nobody logs: the KV at work, and its outages. *)
Silent ==
    \/ \E i \in Inst : Apply(i) \/ ApplyGhost(i) \/ Drop(i) \/ DropGhost(i)
    \/ Expire \/ SilentExpire \/ MarkerGone \/ KVDown \/ KVRecover

(* The protocol step that event e records. *)
Explains(e) ==
    LET i == e.i
        q == req[i]
    IN CASE e.a = "start" -> Start(i) /\ kv.rev = e.rev /\ kv.kind = e.kind
         [] e.a = "request" /\ e.op = "acquire" -> Campaign(i) /\ seen[i].rev = e.rev
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
                IF role[i] = "standby" THEN Observe(i) /\ seen'[i] = [rev |-> e.rev, kind |-> e.kind]
                ELSE Runs(i) /\ UNCHANGED vars
         [] e.a = "crash" -> Crash(i)
         [] e.a = "pause" -> Pause(i)
         [] e.a = "resume" -> Resume(i)
         [] OTHER -> FALSE

TraceInit == Init /\ l = 1 /\ anchor = [i \in Inst |-> <<0, 0>>]

TraceNext ==
    /\ l <= Len(Trace)
    /\ \/ Silent /\ History /\ l' = l /\ UNCHANGED anchor
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

=============================================================================
