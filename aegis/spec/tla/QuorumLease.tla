---------------------------- MODULE QuorumLease ----------------------------
(***************************************************************************)
(* The quorum lease (issue 18): single-active election on a majority of    *)
(* three KV buckets, each with its own stream leader. docs/quorum-lease.md *)
(* states the rules (numbered there; the comments below cite them); this  *)
(* module is their reference model, and it refines SingleActive.tla.      *)
(*                                                                         *)
(* Modelling style of Lease.tla: discrete time (`now`, ticks), one        *)
(* monotonic clock per instance advancing Rate +/- Drift units per tick,  *)
(* the protocol knowing only DriftBound; crash, pause, graceful release;  *)
(* absolute times and revisions in the variables, and a VIEW that keeps   *)
(* only what the future depends on (saturated time differences,           *)
(* revisions by rank, ballots by order and unit gaps).                    *)
(*                                                                         *)
(* Faults: instance crash and restart, pause, graceful stop; node crash   *)
(* (the buckets whose stream leader is on that node stall: they take no   *)
(* writes and answer nothing until a new leader is elected, any time      *)
(* later); a request that got no answer may still land later, in any     *)
(* bucket; optionally bucket amnesia (Reset: a bucket loses acknowledged  *)
(* writes, its incarnation changes) and record erasure (Erasable: a       *)
(* released record ages out like a marker: negative control).            *)
(***************************************************************************)
EXTENDS Naturals, Integers, FiniteSets, TLC

CONSTANTS
    Inst,           \* instance ids
    Rate,           \* local clock units per real tick at nominal speed
    Drift,          \* real clock drift: Rate-Drift .. Rate+Drift units per tick
    DriftBound,     \* the drift the protocol assumes (in its window)
    Lease,          \* a record unmoved this long (local units) is free (rule 1)
    RenewEvery,     \* the active renews this many local units after its previous renewal (rule 5)
    ObsDelay,       \* a watch delivers a write within this many ticks (bucket up)
    NetDelay,       \* 0: a request to an up bucket and its answer take less than a tick (the only value modelled)
    Quorum,         \* buckets a claim needs (2 of 3; 1 is a negative control)
    MaxCrashes,     \* fault budget: instance crashes (kill -9); restarts are free
    MaxPauses,      \* fault budget: pauses of any length
    MaxReleases,    \* graceful stops
    MaxNodeCrashes, \* fault budget: node crashes (each stalls the buckets led from that node)
    MaxResets,      \* fault budget: bucket amnesia (0: the durability assumption holds)
    Timely,         \* TRUE: the delays above are enforced (bounds, liveness)
    DeadlineRule,   \* "median": the Quorum-th largest acknowledged send (rule 3); "latest": the largest (control)
    ResetRule,      \* "quarantine": rule 10; "at_once": a reset bucket counts at once (control)
    Erasable        \* TRUE: a released record may age out, the key absent with floor 0 (control)

ASSUME /\ Rate \in Nat \ {0} /\ Drift \in Nat /\ DriftBound \in Nat
       /\ Drift <= Rate /\ DriftBound < Rate
       /\ {Lease, RenewEvery} \subseteq Nat \ {0}
       /\ {ObsDelay, NetDelay, MaxCrashes, MaxPauses, MaxReleases, MaxNodeCrashes, MaxResets} \subseteq Nat
       /\ Quorum \in 1..3
       /\ {Timely, Erasable} \subseteq BOOLEAN
       /\ DeadlineRule \in {"median", "latest"}
       /\ ResetRule \in {"quarantine", "at_once"}

Buckets == 1..3
NoOne == "none"

(* Settings with a default, overridden in a config by `Name = value` or  *)
(* `Name <- Def`.                                                          *)
WriteTimeout == 1      \* a request to a stalled bucket times out within this many ticks (Timely)
BackoffTicks == 1      \* rule 4: after giving up, a back-off of 0 .. BackoffTicks ticks
MarkerTTL == 1         \* (Erasable) a released record ages out this many ticks after it was written
SpreadLeaders == [b \in Buckets |-> b]                       \* three nodes (rule 9)
SharedLeaders == [b \in Buckets |-> IF b = 3 THEN 2 ELSE b]  \* buckets 2 and 3 led from one node (control)
NodeOf == SpreadLeaders
Nodes == {NodeOf[b] : b \in Buckets}

(* The serving window, as in Lease.tla: Lease*(1-rho)/(1+rho).             *)
Window == (Lease * (Rate - DriftBound)) \div (Rate + DriftBound)
ASSUME NetDelay = 0 /\ ObsDelay = 0 /\ Window > 0

Max(a, b) == IF a > b THEN a ELSE b
Min(a, b) == IF a < b THEN a ELSE b
MaxOf(S) == CHOOSE m \in S : \A x \in S : x <= m
Ceil(a, b) == (a + b - 1) \div b

(* Timing promises in real ticks (FailoverBounded). After a crash of the   *)
(* serving instance, a majority of buckets up: its renewals in flight land *)
(* or are lost within NetDelay, the standby's watch delivers within        *)
(* ObsDelay, its records go free after a lease on the slowest clock, and   *)
(* the standby's claims take a round trip.                                 *)
LeaseTicks == IF Drift < Rate THEN Ceil(Lease, Rate - Drift) ELSE Lease
FailoverBound == NetDelay + ObsDelay + LeaseTicks + 2 * NetDelay
(* After a graceful stop (no node crash in the behaviour: a release that   *)
(* cannot land, or a partial claim that landed late, leaves the standby a  *)
(* lease to wait): the releases land, the standby claims at once.          *)
ReleaseBound == WriteTimeout + 3 * NetDelay + ObsDelay
(* With only node crashes, the active keeps serving. With coarse clocks   *)
(* (a tick longer than the window minus a renewal period, as in the        *)
(* configurations here) a renewal leaves a gap inside a tick; and an      *)
(* active that held only two buckets when one of them stalled stops until  *)
(* it claims the third at its next renewal (rule 5): a released partial    *)
(* claim is free at once.                                                  *)
GapBound == 2

-----------------------------------------------------------------------------
(* Records. A bucket's key holds [holder, ballot, floor, released] (rule   *)
(* "The value") and its revision; kind "none": the key is absent (floor 0); *)
(* in an instance's view kind "unk": a bucket it could not read.            *)
NoRec == [rev |-> 0, kind |-> "none", holder |-> NoOne, bal |-> 0, floor |-> 0, rel |-> FALSE]
UnkRec == [NoRec EXCEPT !.kind = "unk"]
NoReq == [op |-> "none", exp |-> 0, rec |-> [holder |-> NoOne, bal |-> 0, floor |-> 0, rel |-> FALSE],
          sentAt |-> 0, t |-> 0, st |-> "none", ans |-> NoRec, ainc |-> 0]
NoFo == [k |-> "none", t |-> 0]
Writes == {"claim", "renew", "release"}

VARIABLES
    now,        \* real time, ticks
    lc,         \* lc[i]: i's monotonic clock, local units
    up, paused,
    role,       \* "standby" | "candidate" | "active" | "releasing"
    bal,        \* bal[i]: ballot of i's current (or last) claim
    epoch,      \* epoch[i]: the ballot i last won with (its fencing token)
    seen,       \* seen[i][b]: the record i goes by in bucket b
    seenAt,     \* seenAt[i][b]: local time at which i learnt seen[i][b]
    held,       \* held[i][b]: revision of i's acknowledged write of its ballot in b (0: none)
    sent,       \* sent[i][b]: local send time of that write
    lastSend,   \* lastSend[i]: local time of i's last renewal round (schedule)
    req,        \* req[i][b]: i's request to bucket b in flight, or its answer
    kinc,       \* kinc[i][b]: incarnation of bucket b that i knows
    qAt,        \* qAt[i][b]: local time at which i learnt b was reset (rule 10)
    boUntil,    \* boUntil[i]: real time before which i does not campaign (rule 4 back-off)
    soloist,    \* an instance whose campaign no other instance interferes with (see Fairness)
    kv,         \* kv[b]: the record in bucket b
    kvAt,       \* kvAt[b]: real time of its last write
    prev,       \* prev[b]: the record before kv[b] (what an amnesia may revert to)
    pend,       \* pend[b]: writes that got no answer and may still land: [exp, rec]
    seq,        \* revision counter (revisions are fresh across buckets and incarnations)
    inc,        \* inc[b]: incarnation of bucket b (changes on Reset)
    stalled,    \* buckets without a stream leader
    crashes, pauses, releases, nodeCrashes, resets,
    hiServed,   \* history: the newest ballot that ever served
    hiBy,       \* history: the instance that served it
    fo,         \* history: [k, t] ticks since the serving instance crashed / released while nobody serves
    gap         \* history: ticks nobody served since the first service, with node crashes the only faults

inst == <<lc, up, paused, role, bal, epoch, seen, seenAt, held, sent, lastSend, req, kinc, qAt, boUntil, soloist>>
store == <<kv, kvAt, prev, pend, seq, inc, stalled>>
env == <<crashes, pauses, releases, nodeCrashes, resets>>
hist == <<hiServed, hiBy, fo, gap>>
vars == <<now, inst, store, env, hist>>

-----------------------------------------------------------------------------
(* Derived state *)

Runs(i) == up[i] /\ ~paused[i]
Held(i) == {b \in Buckets : held[i][b] # 0}
Idle(i, b) == req[i][b].op = "none"
AllIdle(i) == \A b \in Buckets : Idle(i, b)

(* Rule 3: the serving deadline counts from the Quorum-th largest          *)
(* acknowledged send over the buckets held (the median of three).          *)
Deadline(i) ==
    LET S == {sent[i][b] : b \in Held(i)}
    IN IF DeadlineRule = "latest" THEN MaxOf(S) + Window
       ELSE MaxOf({s \in S : Cardinality({b \in Held(i) : sent[i][b] >= s}) >= Quorum}) + Window

Serving(i) == /\ up[i]
              /\ role[i] = "active"
              /\ Cardinality(Held(i)) >= Quorum
              /\ lc[i] < Deadline(i)

SomeServing == \E i \in Inst : Serving(i)

(* Rule 10: a bucket i learnt was reset counts neither free nor held for a *)
(* lease on i's clock.                                                     *)
Quar(i, b) == ResetRule = "quarantine" /\ lc[i] - qAt[i][b] < Lease

(* Rule 1: free in i's view. *)
Free(i, b) ==
    /\ ~Quar(i, b)
    /\ held[i][b] = 0
    /\ seen[i][b].kind # "unk"
    /\ \/ seen[i][b].kind = "none"
       \/ seen[i][b].rel
       \/ lc[i] - seenAt[i][b] >= Lease

FreeSet(i) == {b \in Buckets : Free(i, b)}
Known(i) == {b \in Buckets : seen[i][b].kind # "unk"}

(* Rule 2: the ballot is above every floor i goes by (at least a majority). *)
(* Never below its own last ballot either (the SDK's rule: a candidate    *)
(* that gave up campaigns again above the claims it may still have in     *)
(* flight; a process starts from ballot 0, Start).                        *)
NewBallot(i) == 1 + Max(bal[i], MaxOf({seen[i][b].floor : b \in Known(i)}))

CanCampaign(i) ==
    /\ Runs(i)
    /\ role[i] = "standby"
    /\ AllIdle(i)
    /\ Cardinality(FreeSet(i)) >= Quorum
    /\ Cardinality(Known(i)) >= Quorum
    /\ now >= boUntil[i]

(* Rule 2: a candidate also claims, with its ballot, a bucket that became *)
(* free after its campaign started (free in a view of staggered lease     *)
(* timers: one bucket's record ages a moment after another's), where the *)
(* floor is below its ballot: a floor at its ballot means another         *)
(* candidate of the same ballot was there, which may have served.        *)
CanClaimMore(i, b) ==
    /\ role[i] = "candidate"
    /\ Idle(i, b)
    /\ Free(i, b)
    /\ seen[i][b].floor < bal[i]

(* Rule 4: a candidate that can no longer reach a majority. *)
Live(i) == Held(i) \cup {b \in Buckets : req[i][b].op = "claim" /\ req[i][b].st \in {"sent", "ok"}}
Hopeless(i) == role[i] = "candidate" /\ Cardinality(Live(i)) < Quorum

Observable(i, b) ==
    /\ b \notin stalled
    /\ \/ seen[i][b].kind = "unk"
       \/ inc[b] # kinc[i][b]
       \/ kv[b].kind = "val" /\ kv[b].rev # held[i][b] /\ kv[b].rev > seen[i][b].rev

-----------------------------------------------------------------------------
Init ==
    /\ now = 0
    /\ lc = [i \in Inst |-> 0]
    /\ up = [i \in Inst |-> TRUE]
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
    /\ kv = [b \in Buckets |-> NoRec]
    /\ kvAt = [b \in Buckets |-> 0]
    /\ prev = [b \in Buckets |-> NoRec]
    /\ pend = [b \in Buckets |-> {}]
    /\ seq = 0
    /\ inc = [b \in Buckets |-> 0]
    /\ stalled = {}
    /\ crashes = 0 /\ pauses = 0 /\ releases = 0 /\ nodeCrashes = 0 /\ resets = 0
    /\ hiServed = 0 /\ hiBy = NoOne
    /\ fo = NoFo
    /\ gap = 0

-----------------------------------------------------------------------------
(* Time *)

Urgent ==
    \/ \E i \in Inst :
         /\ Runs(i)
         /\ \/ role[i] = "active" /\ lc[i] - lastSend[i] >= RenewEvery
            \/ CanCampaign(i)
            \/ Hopeless(i)
            \/ role[i] = "active" /\ ~Serving(i)
            \/ \E b \in Buckets : CanClaimMore(i, b)
            \/ role[i] = "releasing" /\ AllIdle(i)
            \/ role[i] = "releasing" /\ \E b \in Buckets : held[i][b] # 0 /\ Idle(i, b)
            \/ \E b \in Buckets : req[i][b].st \in {"ok", "fail", "timeout"} /\ now - req[i][b].t >= NetDelay
            \/ \E b \in Buckets : Observable(i, b) /\ now - kvAt[b] >= ObsDelay
    \/ \E i \in Inst, b \in Buckets \ stalled : req[i][b].st = "sent"
    \/ \E i \in Inst, b \in stalled : req[i][b].st = "sent" /\ now - req[i][b].t >= WriteTimeout
    \/ \E b \in Buckets \ stalled : pend[b] # {}

Tick ==
    /\ Timely => ~Urgent
    /\ now' = now + 1
    /\ \E d \in [Inst -> Rate - Drift .. Rate + Drift] :
          lc' = [i \in Inst |-> lc[i] + IF up[i] THEN d[i] ELSE Rate]
    /\ UNCHANGED <<up, paused, role, bal, epoch, seen, seenAt, held, sent, lastSend, req, kinc, qAt, boUntil>>
    /\ UNCHANGED <<soloist, store, env>>

-----------------------------------------------------------------------------
(* Instances *)

(* A process starts: it reads every bucket it can (a stalled one is       *)
(* unknown until its watch delivers) and becomes a standby.               *)
Start(i) ==
    /\ ~up[i]
    /\ up' = [up EXCEPT ![i] = TRUE]
    /\ paused' = [paused EXCEPT ![i] = FALSE]
    /\ role' = [role EXCEPT ![i] = "standby"]
    /\ seen' = [seen EXCEPT ![i] = [b \in Buckets |-> IF b \in stalled THEN UnkRec ELSE kv[b]]]
    /\ seenAt' = [seenAt EXCEPT ![i] = [b \in Buckets |-> lc[i]]]
    /\ kinc' = [kinc EXCEPT ![i] = inc]
    /\ qAt' = [qAt EXCEPT ![i] = [b \in Buckets |-> lc[i] - Lease]]
    /\ held' = [held EXCEPT ![i] = [b \in Buckets |-> 0]]
    /\ boUntil' = [boUntil EXCEPT ![i] = now]
    /\ bal' = [bal EXCEPT ![i] = 0]
    /\ UNCHANGED <<now, lc, epoch, sent, lastSend, req, soloist, store, env>>

Write1(i, b, op, exp, rec) ==
    [op |-> op, exp |-> exp, rec |-> rec, sentAt |-> lc[i], t |-> now, st |-> "sent", ans |-> NoRec, ainc |-> 0]

Claim(i, b, nb) ==
    Write1(i, b, "claim", seen[i][b].rev,
           [holder |-> i, bal |-> nb, floor |-> Max(nb, seen[i][b].floor), rel |-> FALSE])

(* Rule 2. `solo`: see Fairness. *)
Campaign(i, solo) ==
    /\ CanCampaign(i)
    /\ soloist \in {NoOne, i}
    /\ solo => \A j \in Inst \ {i} : role[j] # "candidate"
    /\ LET nb == NewBallot(i)
       IN /\ bal' = [bal EXCEPT ![i] = nb]
          /\ req' = [req EXCEPT ![i] = [b \in Buckets |-> IF Free(i, b) THEN Claim(i, b, nb) ELSE req[i][b]]]
    /\ role' = [role EXCEPT ![i] = "candidate"]
    /\ soloist' = IF solo THEN i ELSE soloist
    /\ UNCHANGED <<now, lc, up, paused, epoch, seen, seenAt, held, sent, lastSend, kinc, qAt, boUntil>>
    /\ UNCHANGED <<store, env>>

ClaimMore(i, b) ==
    /\ Runs(i)
    /\ CanClaimMore(i, b)
    /\ req' = [req EXCEPT ![i][b] = Claim(i, b, bal[i])]
    /\ UNCHANGED <<now, lc, up, paused, role, bal, epoch, seen, seenAt, held, sent, lastSend, kinc, qAt, boUntil>>
    /\ UNCHANGED <<soloist, store, env>>

(* Rule 5: renew every bucket held, claim every bucket free in i's view. *)
SendRenew(i) ==
    /\ Runs(i)
    /\ role[i] = "active"
    /\ lc[i] - lastSend[i] >= RenewEvery
    /\ req' = [req EXCEPT ![i] =
          [b \in Buckets |->
             IF ~Idle(i, b) THEN req[i][b]
             ELSE IF held[i][b] # 0
             THEN Write1(i, b, "renew", held[i][b],
                         [holder |-> i, bal |-> bal[i], floor |-> Max(bal[i], seen[i][b].floor), rel |-> FALSE])
             \* a floor above its ballot: a newer ballot claimed there (TLC: without this, an active
             \* deposed in a majority it did not hold re-acquires with its old ballot after the newer
             \* active released: ServingHoldsNewestBallot violated)
             ELSE IF Free(i, b) /\ seen[i][b].floor <= bal[i] THEN Claim(i, b, bal[i])
             ELSE NoReq]]
    /\ lastSend' = [lastSend EXCEPT ![i] = lc[i]]
    /\ UNCHANGED <<now, lc, up, paused, role, bal, epoch, seen, seenAt, held, sent, kinc, qAt, boUntil, soloist>>
    /\ UNCHANGED <<store, env>>

ReleaseReqs(i) ==
    [b \in Buckets |->
       IF held[i][b] # 0
       THEN Write1(i, b, "release", held[i][b],
                   [holder |-> i, bal |-> bal[i], floor |-> Max(bal[i], seen[i][b].floor), rel |-> TRUE])
       ELSE req[i][b]]

(* Rule 7: stop serving, then release every bucket held. A bucket with a  *)
(* request in flight (a renewal, a candidate's claim) is released once it  *)
(* is answered and held (ReleaseMore), as the SDK does; a candidate may    *)
(* stop too (its claims acknowledged later are released the same way).    *)
IdleHeld(i) == {b \in Buckets : held[i][b] # 0 /\ Idle(i, b)}
ReleaseIdle(i) ==
    /\ req' = [req EXCEPT ![i] =
          [b \in Buckets |->
             IF b \in IdleHeld(i)
             THEN Write1(i, b, "release", held[i][b],
                         [holder |-> i, bal |-> bal[i], floor |-> Max(bal[i], seen[i][b].floor), rel |-> TRUE])
             ELSE req[i][b]]]
    /\ held' = [held EXCEPT ![i] = [b \in Buckets |-> IF b \in IdleHeld(i) THEN 0 ELSE held[i][b]]]

Release(i) ==
    /\ Runs(i)
    /\ role[i] \in {"active", "candidate"}
    /\ releases < MaxReleases
    /\ releases' = releases + 1
    /\ role' = [role EXCEPT ![i] = "releasing"]
    /\ ReleaseIdle(i)
    /\ soloist' = IF soloist = i THEN NoOne ELSE soloist
    /\ UNCHANGED <<now, lc, up, paused, bal, epoch, seen, seenAt, sent, lastSend, kinc, qAt, boUntil>>
    /\ UNCHANGED <<store, crashes, pauses, nodeCrashes, resets>>

ReleaseMore(i) ==      \* a releasing instance releases a bucket whose request was answered
    /\ Runs(i)
    /\ role[i] = "releasing"
    /\ IdleHeld(i) # {}
    /\ ReleaseIdle(i)
    /\ UNCHANGED <<now, lc, up, paused, role, bal, epoch, seen, seenAt, sent, lastSend, kinc, qAt, boUntil>>
    /\ UNCHANGED <<soloist, store, env>>

(* Rule 4: give up, release the partial claims, back off. *)
GiveUp(i) ==
    /\ Runs(i)
    /\ Hopeless(i)
    /\ role' = [role EXCEPT ![i] = "standby"]
    /\ req' = [req EXCEPT ![i] = ReleaseReqs(i)]
    /\ held' = [held EXCEPT ![i] = [b \in Buckets |-> 0]]
    /\ \E d \in 0..BackoffTicks : boUntil' = [boUntil EXCEPT ![i] = now + d]
    /\ soloist' = IF soloist = i THEN NoOne ELSE soloist
    /\ UNCHANGED <<now, lc, up, paused, bal, epoch, seen, seenAt, sent, lastSend, kinc, qAt>>
    /\ UNCHANGED <<store, env>>

(* Rule 6: an active whose serving window ended (no acknowledgement from  *)
(* a majority for a window) steps down and hands back what it holds: it   *)
(* cannot serve, and a bucket it kept renewing would keep the standbys out *)
(* (with the other two: one stalled, one whose floor went above its ballot *)
(* in their duels, nobody could win until the stalled one came back).      *)
Expire(i) ==
    /\ Runs(i)
    /\ role[i] = "active"
    /\ ~Serving(i)
    /\ role' = [role EXCEPT ![i] = "standby"]
    /\ req' = [req EXCEPT ![i] =
          [b \in Buckets |->
             IF held[i][b] # 0 /\ Idle(i, b)
             THEN Write1(i, b, "release", held[i][b],
                         [holder |-> i, bal |-> bal[i], floor |-> Max(bal[i], seen[i][b].floor), rel |-> TRUE])
             ELSE req[i][b]]]
    /\ held' = [held EXCEPT ![i] = [b \in Buckets |-> 0]]
    /\ UNCHANGED <<now, lc, up, paused, bal, epoch, seen, seenAt, sent, lastSend, kinc, qAt, boUntil, soloist>>
    /\ UNCHANGED <<store, env>>

Exit(i) ==             \* a releasing instance exits once its releases are answered
    /\ Runs(i)
    /\ role[i] = "releasing"
    /\ AllIdle(i)
    /\ Held(i) = {}
    /\ up' = [up EXCEPT ![i] = FALSE]
    /\ role' = [role EXCEPT ![i] = "standby"]
    /\ UNCHANGED <<now, lc, paused, bal, epoch, seen, seenAt, held, sent, lastSend, req, kinc, qAt, boUntil>>
    /\ UNCHANGED <<soloist, store, env>>

(* i takes in what bucket b answered. Ordering rule (as Lease.tla): a      *)
(* failure answer counts only if newer than what i goes by there.          *)
Newer(a, s, q) ==
    \/ a.rev > s.rev
    \/ s.kind = "unk"
    \/ a.rev = 0 /\ s.rev <= q.exp

AnswerCore(i, b, q, sn, sa) ==
    LET mine == q.ans.kind = "val" /\ q.ans.holder = i /\ q.ans.bal = bal[i] /\ ~q.ans.rel
        current == role[i] \in {"candidate", "active", "releasing"} /\ q.rec.bal = bal[i] /\ q.op \in {"claim", "renew"}
        \* rule 10: an answer from a new incarnation, or from a bucket i holds in quarantine
        reset == q.st \in {"ok", "fail"} /\ (q.ainc # kinc[i][b] \/ Quar(i, b))
        stepDown(h) == role[i] = "active" /\ Cardinality({c \in Buckets : h[c] # 0}) < Quorum
        noHeld == [c \in Buckets |-> 0]
    IN
    /\ q.st \in {"ok", "fail", "timeout"}
    /\ \/ /\ reset
          \* rule 10: b was reset; i learns its incarnation and goes by what it holds now
          /\ LET h1 == [held[i] EXCEPT ![b] = 0]
             IN /\ held' = [held EXCEPT ![i] = IF stepDown(h1) THEN noHeld ELSE h1]
                /\ role' = [role EXCEPT ![i] = IF stepDown(h1) THEN "standby" ELSE role[i]]
          /\ kinc' = [kinc EXCEPT ![i][b] = q.ainc]
          /\ qAt' = [qAt EXCEPT ![i][b] = IF q.ainc # kinc[i][b] THEN lc[i] ELSE qAt[i][b]]
          /\ seen' = [sn EXCEPT ![i][b] = q.ans]
          /\ seenAt' = [sa EXCEPT ![i][b] = lc[i]]
          /\ req' = [req EXCEPT ![i][b] = NoReq]
          /\ UNCHANGED <<up, epoch, sent, lastSend, soloist>>
       \/ /\ ~reset /\ q.st = "ok" /\ current
          \* rule 3 / 5: acknowledged; a candidate with a majority wins
          /\ LET h1 == [held[i] EXCEPT ![b] = q.ans.rev]
                 wins == role[i] = "candidate" /\ Cardinality({c \in Buckets : h1[c] # 0}) >= Quorum
             IN /\ held' = [held EXCEPT ![i] = h1]
                /\ role' = [role EXCEPT ![i] = IF wins THEN "active" ELSE role[i]]
                /\ epoch' = [epoch EXCEPT ![i] = IF wins THEN bal[i] ELSE epoch[i]]
                /\ lastSend' = [lastSend EXCEPT ![i] = IF wins THEN q.sentAt ELSE lastSend[i]]
                /\ soloist' = IF wins /\ soloist = i THEN NoOne ELSE soloist
          /\ sent' = [sent EXCEPT ![i][b] = q.sentAt]
          /\ seen' = [sn EXCEPT ![i][b] = q.ans]
          /\ seenAt' = [sa EXCEPT ![i][b] = lc[i]]
          /\ req' = [req EXCEPT ![i][b] = NoReq]
          /\ UNCHANGED <<up, kinc, qAt>>
       \/ /\ ~reset /\ q.st = "ok" /\ ~current
          \* a late answer (i gave up or stepped down meanwhile, or a release): i goes by its own
          \* record unless it saw a newer one meanwhile (a watch delivered the next claim before the
          \* answer came; the SDK's _learn keeps the newer record: the partition campaign's trace); a
          \* claim acknowledged after giving up, or a renewal after stepping down, is released like the
          \* others (rules 4 and 6)
          /\ LET newer == q.ans.rev > sn[i][b].rev \/ sn[i][b].kind = "unk"
             IN /\ seen' = [sn EXCEPT ![i][b] = IF newer THEN q.ans ELSE @]
                /\ seenAt' = [sa EXCEPT ![i][b] = IF newer THEN lc[i] ELSE @]
          /\ req' = [req EXCEPT ![i][b] =
                       IF q.op \in {"claim", "renew"} /\ role[i] = "standby" /\ q.rec.bal = bal[i]
                       THEN Write1(i, b, "release", q.ans.rev, [q.rec EXCEPT !.rel = TRUE])
                       ELSE NoReq]
          /\ UNCHANGED <<up, role, epoch, held, sent, lastSend, kinc, qAt, soloist>>
       \/ /\ ~reset /\ q.st = "fail" /\ q.op = "renew" /\ mine /\ role[i] \in {"active", "releasing"}
          \* rule 6: my own timed-out renewal landed: adopt its revision (the send time stays; releasing:
          \* it releases that revision)
          /\ held' = [held EXCEPT ![i][b] = q.ans.rev]
          /\ seen' = [sn EXCEPT ![i][b] = q.ans]
          /\ seenAt' = [sa EXCEPT ![i][b] = lc[i]]
          /\ req' = [req EXCEPT ![i][b] = NoReq]
          /\ UNCHANGED <<up, role, epoch, sent, lastSend, kinc, qAt, soloist>>
       \/ /\ ~reset /\ q.st = "fail" /\ q.op = "release" /\ mine
          \* my own lost renewal landed: release again on its revision
          /\ req' = [req EXCEPT ![i][b] = Write1(i, b, "release", q.ans.rev, [q.rec EXCEPT !.floor = Max(@, q.ans.floor)])]
          /\ UNCHANGED <<up, role, epoch, held, sent, lastSend, kinc, qAt, soloist>> /\ seen' = sn /\ seenAt' = sa
       \/ /\ ~reset /\ q.st = "fail" /\ ~(q.op = "renew" /\ mine /\ role[i] \in {"active", "releasing"})
          /\ ~(q.op = "release" /\ mine)
          \* rule 6: someone else wrote: the bucket is lost; fewer than Quorum held: stop serving and
          \* hand back the minority still held (where no request is in flight; a renewal answered
          \* later is handed back then), so that nobody waits a lease for it
          /\ LET h1 == [held[i] EXCEPT ![b] = 0]
             IN /\ held' = [held EXCEPT ![i] = IF stepDown(h1) THEN noHeld ELSE h1]
                /\ role' = [role EXCEPT ![i] = IF stepDown(h1) THEN "standby" ELSE role[i]]
                /\ req' = [req EXCEPT ![i] =
                      [c \in Buckets |->
                         IF c = b THEN NoReq
                         ELSE IF stepDown(h1) /\ h1[c] # 0 /\ Idle(i, c)
                         THEN Write1(i, c, "release", h1[c],
                                     [holder |-> i, bal |-> bal[i], floor |-> Max(bal[i], seen[i][c].floor),
                                      rel |-> TRUE])
                         ELSE req[i][c]]]
          /\ IF Newer(q.ans, seen[i][b], q)
             THEN /\ seen' = [sn EXCEPT ![i][b] = q.ans]
                  /\ seenAt' = [sa EXCEPT ![i][b] = lc[i]]
             ELSE seen' = sn /\ seenAt' = sa
          /\ UNCHANGED <<up, epoch, sent, lastSend, kinc, qAt, soloist>>
       \/ /\ q.st = "timeout"
          \* rule 6: outcome unknown; a renewal keeps held and its old send time, and is retried
          /\ req' = [req EXCEPT ![i][b] = NoReq]
          /\ UNCHANGED <<up, role, epoch, held, sent, lastSend, kinc, qAt, soloist>> /\ seen' = sn /\ seenAt' = sa
    /\ UNCHANGED <<lc, paused, bal, boUntil>>

Answer(i, b) ==        \* an answer that waited for i (paused), or a timeout
    /\ Runs(i)
    /\ AnswerCore(i, b, req[i][b], seen, seenAt)
    /\ UNCHANGED <<now, store, env>>

(* The watch of bucket b delivers its current record (a new revision, or a *)
(* new incarnation: rule 10), or the first record of a bucket i could not  *)
(* read. It restarts i's timer there (rule 1).                             *)
Observe(i, b) ==
    /\ Runs(i)
    /\ Observable(i, b)
    /\ seen' = [seen EXCEPT ![i][b] = kv[b]]
    /\ seenAt' = [seenAt EXCEPT ![i][b] = lc[i]]
    /\ kinc' = [kinc EXCEPT ![i][b] = inc[b]]
    /\ IF inc[b] # kinc[i][b] /\ seen[i][b].kind # "unk"
       THEN LET h1 == [held[i] EXCEPT ![b] = 0]
                down == role[i] = "active" /\ Cardinality({c \in Buckets : h1[c] # 0}) < Quorum
            IN /\ qAt' = [qAt EXCEPT ![i][b] = lc[i]]
               /\ held' = [held EXCEPT ![i] = IF down THEN [c \in Buckets |-> 0] ELSE h1]
               /\ role' = [role EXCEPT ![i] = IF down THEN "standby" ELSE role[i]]
       ELSE UNCHANGED <<qAt, held, role>>
    /\ UNCHANGED <<now, lc, up, paused, bal, epoch, sent, lastSend, req, boUntil, soloist, store, env>>

(* kill -9: requests in flight may still land (pend). *)
Crash(i) ==
    /\ up[i]
    /\ crashes < MaxCrashes
    /\ crashes' = crashes + 1
    /\ up' = [up EXCEPT ![i] = FALSE]
    /\ paused' = [paused EXCEPT ![i] = FALSE]
    /\ role' = [role EXCEPT ![i] = "standby"]
    /\ held' = [held EXCEPT ![i] = [b \in Buckets |-> 0]]
    /\ req' = [req EXCEPT ![i] = [b \in Buckets |-> NoReq]]
    /\ pend' = [b \in Buckets |->
                  IF req[i][b].st = "sent" /\ req[i][b].exp = kv[b].rev
                  THEN pend[b] \cup {[exp |-> req[i][b].exp, rec |-> req[i][b].rec]}
                  ELSE pend[b]]
    /\ soloist' = IF soloist = i THEN NoOne ELSE soloist
    /\ UNCHANGED <<now, lc, bal, epoch, seen, seenAt, sent, lastSend, kinc, qAt, boUntil>>
    /\ UNCHANGED <<kv, kvAt, prev, seq, inc, stalled, pauses, releases, nodeCrashes, resets>>

Pause(i) ==
    /\ Runs(i)
    /\ pauses < MaxPauses
    /\ pauses' = pauses + 1
    /\ paused' = [paused EXCEPT ![i] = TRUE]
    /\ UNCHANGED <<now, lc, up, role, bal, epoch, seen, seenAt, held, sent, lastSend, req, kinc, qAt, boUntil>>
    /\ UNCHANGED <<soloist, store, crashes, releases, nodeCrashes, resets>>

Resume(i) ==
    /\ up[i] /\ paused[i]
    /\ paused' = [paused EXCEPT ![i] = FALSE]
    /\ UNCHANGED <<now, lc, up, role, bal, epoch, seen, seenAt, held, sent, lastSend, req, kinc, qAt, boUntil>>
    /\ UNCHANGED <<soloist, store, env>>

-----------------------------------------------------------------------------
(* The buckets *)

(* A write takes a fresh revision; every write still pending in b was a   *)
(* compare-and-set on b's old revision and can no longer land.             *)
NewRec(rec) == [rev |-> seq + 1, kind |-> "val", holder |-> rec.holder, bal |-> rec.bal,
                floor |-> rec.floor, rel |-> rec.rel]

StoreWrite(b, rec) ==
    /\ kv' = [kv EXCEPT ![b] = NewRec(rec)]
    /\ kvAt' = [kvAt EXCEPT ![b] = now]
    /\ prev' = [prev EXCEPT ![b] = kv[b]]
    /\ seq' = seq + 1
    /\ pend' = [pend EXCEPT ![b] = {}]

(* The watches: with ObsDelay = 0 the running instances other than the     *)
(* writer learn a write as it lands (their clocks do not move within a     *)
(* tick, so a later delivery in the same tick would give the same seenAt). *)
(* A paused instance, one that could not read b, or one that does not know *)
(* b's incarnation learns it by Observe.                                   *)
Delivers(j, b, w) == j # w /\ Runs(j) /\ seen[j][b].kind # "unk" /\ kinc[j][b] = inc[b]
DlSeen(b, r, w) == [j \in Inst |-> IF Delivers(j, b, w) THEN [seen[j] EXCEPT ![b] = r] ELSE seen[j]]
DlSeenAt(b, w) == [j \in Inst |-> IF Delivers(j, b, w) THEN [seenAt[j] EXCEPT ![b] = lc[j]] ELSE seenAt[j]]

(* A request to an up bucket and its answer, as one step (NetDelay = 0:    *)
(* within a tick; the steps of other instances interleave between the      *)
(* round trips).                                                          *)
Round(i, b) ==
    LET q == req[i][b]
        r == NewRec(q.rec)
    IN
    /\ Runs(i)
    /\ b \notin stalled
    /\ q.st = "sent"
    /\ IF q.exp = kv[b].rev
       THEN /\ StoreWrite(b, q.rec)
            /\ AnswerCore(i, b, [q EXCEPT !.st = "ok", !.t = now, !.ans = r, !.ainc = inc[b]],
                          DlSeen(b, r, i), DlSeenAt(b, i))
       ELSE /\ AnswerCore(i, b, [q EXCEPT !.st = "fail", !.t = now, !.ans = kv[b], !.ainc = inc[b]],
                          seen, seenAt)
            /\ UNCHANGED <<kv, kvAt, prev, seq, pend>>
    /\ UNCHANGED <<now, inc, stalled, env>>

(* The request of a paused instance lands; it takes in the answer later.   *)
Apply(i, b) ==
    LET q == req[i][b]
        r == NewRec(q.rec)
    IN
    /\ up[i] /\ paused[i]
    /\ b \notin stalled
    /\ q.st = "sent"
    /\ IF q.exp = kv[b].rev
       THEN /\ StoreWrite(b, q.rec)
            /\ req' = [req EXCEPT ![i][b] = [q EXCEPT !.st = "ok", !.t = now, !.ans = r, !.ainc = inc[b]]]
            /\ seen' = DlSeen(b, r, i) /\ seenAt' = DlSeenAt(b, i)
       ELSE /\ req' = [req EXCEPT ![i][b] = [q EXCEPT !.st = "fail", !.t = now, !.ans = kv[b], !.ainc = inc[b]]]
            /\ UNCHANGED <<kv, kvAt, prev, seq, pend, seen, seenAt>>
    /\ UNCHANGED <<now, lc, up, paused, role, bal, epoch, held, sent, lastSend, kinc, qAt, boUntil>>
    /\ UNCHANGED <<soloist, inc, stalled, env>>

(* A stalled bucket answers nothing: the request times out; a write that *)
(* has not landed may still land later (pend), or the answer of one that  *)
(* landed is lost.                                                        *)
Drop(i, b) ==
    LET q == req[i][b]
    IN
    /\ b \in stalled
    /\ q.st \in {"sent", "ok"}    \* "ok": it landed (its writer paused), then the answer was lost
    /\ req' = [req EXCEPT ![i][b] = [q EXCEPT !.st = "timeout", !.t = now]]
    /\ \/ UNCHANGED pend
       \/ /\ q.st = "sent" /\ q.exp = kv[b].rev
          /\ pend' = [pend EXCEPT ![b] = @ \cup {[exp |-> q.exp, rec |-> q.rec]}]
    /\ UNCHANGED <<now, lc, up, paused, role, bal, epoch, seen, seenAt, held, sent, lastSend, kinc, qAt, boUntil>>
    /\ UNCHANGED <<soloist, kv, kvAt, prev, seq, inc, stalled, env>>

ApplyPend(b) ==        \* a write nobody waits for lands (a compare-and-set on b's current revision)
    /\ b \notin stalled
    /\ \E p \in pend[b] :
          /\ StoreWrite(b, p.rec)
          /\ seen' = DlSeen(b, NewRec(p.rec), NoOne) /\ seenAt' = DlSeenAt(b, NoOne)
    /\ UNCHANGED <<now, lc, up, paused, role, bal, epoch, held, sent, lastSend, req, kinc, qAt, boUntil>>
    /\ UNCHANGED <<soloist, inc, stalled, env>>

DropPend(b) ==         \* or it is lost
    /\ \E p \in pend[b] : pend' = [pend EXCEPT ![b] = @ \ {p}]
    /\ UNCHANGED <<now, inst, kv, kvAt, prev, seq, inc, stalled, env>>

(* A node crash stalls the buckets led from that node; each gets a new     *)
(* stream leader some time later.                                          *)
NodeCrash(n) ==
    /\ nodeCrashes < MaxNodeCrashes
    /\ nodeCrashes' = nodeCrashes + 1
    /\ stalled' = stalled \cup {b \in Buckets : NodeOf[b] = n}
    /\ UNCHANGED <<now, inst, kv, kvAt, prev, pend, seq, inc, crashes, pauses, releases, resets>>

Recover(b) ==
    /\ b \in stalled
    /\ stalled' = stalled \ {b}
    /\ UNCHANGED <<now, inst, kv, kvAt, prev, pend, seq, inc, env>>

(* Amnesia (against the durability assumption): bucket b loses its last    *)
(* write, or everything; its incarnation changes. Revisions stay fresh    *)
(* (the model does not reuse them: a compare-and-set on a revision the     *)
(* bucket forgot can only succeed if it is the one reverted to).          *)
Reset(b) ==
    /\ resets < MaxResets
    /\ resets' = resets + 1
    /\ \E r \in {prev[b], NoRec} : kv' = [kv EXCEPT ![b] = r]
    /\ kvAt' = [kvAt EXCEPT ![b] = now]
    /\ inc' = [inc EXCEPT ![b] = @ + 1]
    /\ pend' = [pend EXCEPT ![b] = {}]
    /\ prev' = [prev EXCEPT ![b] = NoRec]
    /\ UNCHANGED <<now, inst, seq, stalled, crashes, pauses, releases, nodeCrashes>>

(* Negative control: a released record ages out (a marker with a TTL): the *)
(* key is absent, its floor gone. The protocol forbids TTLs and markers.  *)
Erase(b) ==
    /\ Erasable
    /\ kv[b].kind = "val" /\ kv[b].rel
    /\ now - kvAt[b] >= MarkerTTL
    /\ kv' = [kv EXCEPT ![b] = NoRec]
    /\ prev' = [prev EXCEPT ![b] = kv[b]]
    /\ pend' = [pend EXCEPT ![b] = {}]
    /\ UNCHANGED <<now, inst, kvAt, seq, inc, stalled, env>>

-----------------------------------------------------------------------------
(* History variables *)

Calm == \A j \in Inst : up[j] => ~paused[j]

History ==
    /\ LET sv == {i \in Inst : Serving(i)'}
           es == {epoch'[i] : i \in sv} \cup {hiServed}
           m == MaxOf(es)
       IN /\ hiServed' = m
          /\ hiBy' = IF \E i \in sv : epoch'[i] = m THEN CHOOSE i \in sv : epoch'[i] = m ELSE hiBy
    /\ fo' = IF SomeServing'
             THEN NoFo
             ELSE IF \E i \in Inst : /\ Serving(i) /\ ~up'[i] /\ Calm'
                                     /\ \E j \in Inst \ {i} : up'[j] /\ role'[j] # "releasing"
             THEN [k |-> "crash", t |-> 0]
             ELSE IF \E i \in Inst : /\ Serving(i) /\ role'[i] = "releasing" /\ Calm'
                                     /\ \E j \in Inst \ {i} : up'[j] /\ role'[j] # "releasing"
                                     \* (a stalled bucket keeps its release from landing, and a
                                     \* claim that landed late in a bucket waits a lease: TLC)
                                     /\ nodeCrashes' = 0
             THEN [k |-> "release", t |-> 0]
             ELSE IF \/ fo.k = "none"
                     \/ ~Calm'
                     \/ crashes' > crashes \/ resets' > resets
                     \/ ~\E j \in Inst : up'[j] /\ role'[j] # "releasing"
             THEN NoFo
             ELSE [fo EXCEPT !.t = fo.t + (now' - now)]
    /\ gap' = IF \/ SomeServing' \/ hiServed' = 0
                 \/ crashes' + pauses' + releases' + resets' > 0
              THEN 0
              ELSE gap + (now' - now)

-----------------------------------------------------------------------------
Step ==
    \/ Tick
    \/ \E i \in Inst :
          \/ Start(i) \/ Campaign(i, FALSE) \/ Campaign(i, TRUE) \/ SendRenew(i) \/ Release(i) \/ ReleaseMore(i)
          \/ GiveUp(i) \/ Expire(i) \/ Exit(i) \/ Crash(i) \/ Pause(i) \/ Resume(i)
          \/ \E b \in Buckets : ClaimMore(i, b) \/ Round(i, b) \/ Answer(i, b) \/ Observe(i, b) \/ Apply(i, b) \/ Drop(i, b)
    \/ \E b \in Buckets : ApplyPend(b) \/ DropPend(b) \/ Recover(b) \/ Reset(b) \/ Erase(b)
    \/ \E n \in Nodes : NodeCrash(n)

Next == Step /\ History

(* Timely steps happen; faults need not, and a stalled bucket need not    *)
(* recover. Duelling candidates (rule 4): each back-off is a fresh draw,   *)
(* so with probability 1 one candidate eventually campaigns while no other *)
(* one does (its draw was shorter by more than a round trip); as fairness: *)
(* a solo campaign that is possible again and again eventually happens    *)
(* (strong fairness). While it runs the others wait (`soloist`).          *)
Fairness ==
    /\ SF_vars(Tick /\ History)
    /\ \A i \in Inst :
          WF_vars((SendRenew(i) \/ ReleaseMore(i) \/ GiveUp(i) \/ Expire(i) \/ Exit(i) \/ Resume(i)
                   \/ \E b \in Buckets : ClaimMore(i, b) \/ Answer(i, b) \/ Observe(i, b)) /\ History)
    /\ \A i \in Inst : WF_vars((Campaign(i, FALSE) \/ Campaign(i, TRUE)) /\ History)
    /\ \A i \in Inst : SF_vars(Campaign(i, TRUE) /\ History)
    /\ \A i \in Inst : WF_vars((\E b \in Buckets : Round(i, b) \/ Apply(i, b) \/ Drop(i, b)) /\ History)
    /\ \A b \in Buckets : WF_vars((ApplyPend(b) \/ DropPend(b)) /\ History)

Spec == Init /\ [][Next]_vars
FairSpec == Spec /\ Fairness

-----------------------------------------------------------------------------
(* Properties *)

TypeOK ==
    /\ now \in Nat
    /\ lc \in [Inst -> Nat]
    /\ up \in [Inst -> BOOLEAN] /\ paused \in [Inst -> BOOLEAN]
    /\ role \in [Inst -> {"standby", "candidate", "active", "releasing"}]
    /\ \A i \in Inst, b \in Buckets :
          /\ req[i][b].op \in {"none"} \cup Writes
          /\ req[i][b].st \in {"none", "sent", "ok", "fail", "timeout"}
          /\ seen[i][b].kind \in {"val", "none", "unk"}
          /\ held[i][b] \in Nat
    /\ \A b \in Buckets : kv[b].kind \in {"val", "none"} /\ kv[b].rev <= seq /\ kv[b].floor >= kv[b].bal
    /\ stalled \subseteq Buckets
    /\ soloist \in Inst \cup {NoOne}
    /\ fo.k \in {"none", "crash", "release"}

(* Never two instances serving at the same real time. *)
NoOverlap == \A i, j \in Inst : (i # j) => ~(Serving(i) /\ Serving(j))

(* Whoever serves holds the newest ballot that ever served, and is the     *)
(* instance that served it: ballots order the serving periods (fencing).   *)
ServingHoldsNewestBallot == \A i \in Inst : Serving(i) => (epoch[i] = hiServed /\ hiBy = i)

(* Ballots strictly increase from one serving period to the next. *)
BallotsStrictlyIncrease ==
    [][\A i \in Inst : (Serving(i)' /\ ~(epoch'[i] = hiServed /\ hiBy = i)) => epoch'[i] > hiServed]_vars

(* Per-bucket ballot monotonicity: a bucket's floor never goes down (a     *)
(* reset, against the durability assumption, starts a new incarnation).    *)
FloorMonotone == [][\A b \in Buckets : inc'[b] = inc[b] => kv'[b].floor >= kv[b].floor]_vars

(* Bounded failover with a majority of buckets up (when the leaders sit on *)
(* different nodes, one node crash leaves two) and bounded handover.       *)
FailoverBounded ==
    /\ fo.k = "crash" => fo.t <= FailoverBound
    /\ fo.k = "release" => fo.t <= ReleaseBound

(* Keeps serving while a majority of buckets is up and the active runs: with *)
(* node crashes the only faults, once an instance served, nobody-serving   *)
(* lasts at most GapBound ticks (so no failover because one bucket is      *)
(* down: a failover takes a lease).                                       *)
KeepsServingWithMajority == gap <= GapBound

(* Liveness: once some instance stays up, an instance serves, again and     *)
(* again, even with duelling candidates (Fairness).                         *)
EventuallyServes == <>[](\E i \in Inst : up[i]) => []<>SomeServing

(* Refinement of the abstract single-active service. (No clients in this   *)
(* model: no replies; rule 8 is Lease.tla's, per ballot.)                 *)
Abstract == INSTANCE SingleActive WITH
                serving <- [i \in Inst |-> Serving(i)],
                token <- epoch,
                hi <- hiServed,
                out <- {}
Refines == Abstract!Spec

Symmetry == Permutations(Inst)

-----------------------------------------------------------------------------
(* The view: what the future depends on. Revisions by rank (a new one is  *)
(* larger than all); ballots by order with gaps capped at 2 (the protocol *)
(* compares ballots and adds 1 to a maximum: a gap of 1 and a gap of 2 or *)
(* more behave differently, larger gaps alike as far as the next ballot   *)
(* goes); time as saturated differences.                                  *)

ReqRevs(q) ==
    IF q.op = "none" THEN {}
    ELSE {q.exp} \cup (IF q.st \in {"ok", "fail"} THEN {q.ans.rev} ELSE {})
ReqBals(q) ==
    IF q.op = "none" THEN {}
    ELSE {q.rec.bal, q.rec.floor} \cup (IF q.st \in {"ok", "fail"} THEN {q.ans.bal, q.ans.floor} ELSE {})

UpInst == {i \in Inst : up[i]}

(* Revisions of different buckets are never compared: ranked per bucket. *)
Revs(b) == {0, kv[b].rev}
        \cup (IF resets < MaxResets THEN {prev[b].rev} ELSE {})
        \cup {p.exp : p \in pend[b]}
        \cup UNION {{seen[i][b].rev, held[i][b]} \cup ReqRevs(req[i][b]) : i \in UpInst}

Bals == {0, hiServed}
        \cup UNION {{kv[b].bal, kv[b].floor} : b \in Buckets}
        \cup (IF resets < MaxResets THEN UNION {{prev[b].bal, prev[b].floor} : b \in Buckets} ELSE {})
        \cup UNION {UNION {{p.rec.bal, p.rec.floor} : p \in pend[b]} : b \in Buckets}
        \cup {bal[i] : i \in UpInst} \cup {epoch[i] : i \in UpInst}
        \cup UNION {{seen[i][b].bal, seen[i][b].floor} \cup ReqBals(req[i][b]) : i \in UpInst, b \in Buckets}

ViewOf(bv) ==
    LET rks == [b \in Buckets |-> LET rv == Revs(b) IN [v \in rv |-> Cardinality({x \in rv : x < v})]]
        bk == [v \in bv |-> Cardinality({x \in bv : x < v})
                            + Cardinality({x \in bv : x < v /\ ~(x + 1 \in bv)})]
        RecV(r, rk) == <<rk[r.rev], r.kind, r.holder, bk[r.bal], bk[r.floor], r.rel>>
        WRecV(r) == <<r.holder, bk[r.bal], bk[r.floor], r.rel>>
        QV(i, b) ==
          LET q == req[i][b]
              rk == rks[b]
          IN IF q.op = "none" THEN <<>>
             ELSE <<q.op, q.st, rk[q.exp], WRecV(q.rec),
                    IF q.op # "release" /\ q.st \in {"sent", "ok"} THEN Min(lc[i] - q.sentAt, Window) ELSE 0,
                    IF Timely THEN Min(now - q.t, IF q.st = "sent" THEN Max(NetDelay, WriteTimeout) ELSE NetDelay)
                    ELSE 0,
                    IF q.st \in {"ok", "fail"} THEN <<RecV(q.ans, rk), q.ainc = kinc[i][b]>> ELSE <<>>>>
        BV(i, b) ==
          LET rk == rks[b] IN
          <<RecV(seen[i][b], rk),
            IF seen[i][b].kind = "val" /\ ~seen[i][b].rel /\ held[i][b] = 0
            THEN Min(lc[i] - seenAt[i][b], Lease) ELSE 0,
            rk[held[i][b]],
            IF held[i][b] # 0 THEN Min(lc[i] - sent[i][b], Window) ELSE 0,
            QV(i, b),
            kinc[i][b] = inc[b],
            IF ResetRule = "quarantine" THEN Min(lc[i] - qAt[i][b], Lease) ELSE 0>>
        IV(i) ==
          IF ~up[i] THEN <<"down">>
          ELSE <<role[i], paused[i], bk[bal[i]], bk[epoch[i]],
                 [b \in Buckets |-> BV(i, b)],
                 IF role[i] = "active" THEN Min(lc[i] - lastSend[i], RenewEvery) ELSE 0,
                 IF role[i] = "standby" THEN Max(boUntil[i] - now, 0) ELSE 0>>
    IN << [i \in Inst |-> IV(i)],
          [b \in Buckets |-> <<RecV(kv[b], rks[b]),
                               Min(now - kvAt[b], Max(ObsDelay, IF Erasable THEN MarkerTTL ELSE 0)),
                               IF resets < MaxResets THEN RecV(prev[b], rks[b]) ELSE <<>>,
                               {<<rks[b][p.exp], WRecV(p.rec)>> : p \in pend[b]},
                               b \in stalled>>],
          soloist, crashes, pauses, releases, nodeCrashes, resets,
          bk[hiServed], hiBy,
          <<fo.k, Min(fo.t, Max(FailoverBound, ReleaseBound) + 1)>>,
          Min(gap, GapBound + 1) >>

View == ViewOf(Bals)

=============================================================================
