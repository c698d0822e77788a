---------------------------- MODULE SingleActive ----------------------------
(***************************************************************************)
(* The abstract single-active service: who serves, under which epoch, and  *)
(* what a success reply may carry. Nothing about keys, buckets, clocks or  *)
(* messages: any election protocol of Aegis must refine this module.       *)
(* Lease.tla (one KV key) is checked against it (its `Refines` property);  *)
(* a quorum lease over several buckets is to be checked the same way.      *)
(*                                                                         *)
(* The rules, as one step relation over the next state:                    *)
(*   - at most one instance serves;                                        *)
(*   - epochs are fencing tokens: a token an instance takes is one no      *)
(*     other instance holds (nor the newest that served), and an instance  *)
(*     serves only with a token at                                         *)
(*     least as new as every token that served before (the newest one      *)
(*     that served, `hi`, never goes back);                                *)
(*   - a success reply is produced only by a serving instance, stamped     *)
(*     with the token it serves under.                                     *)
(* Anything else (several tokens taken, a serving period ending, replies   *)
(* delivered) may happen in one step.                                      *)
(***************************************************************************)
EXTENDS Naturals

CONSTANT Inst

VARIABLES
    serving,   \* serving[i]: i answers clients now
    token,     \* token[i]: the epoch i holds (0: none yet)
    hi,        \* the newest epoch that has served
    out        \* epochs of the success replies produced and not yet taken by a client

vars == <<serving, token, hi, out>>

TypeOK ==
    /\ serving \in [Inst -> BOOLEAN]
    /\ token \in [Inst -> Nat]
    /\ hi \in Nat
    /\ out \subseteq Nat

Init ==
    /\ serving = [i \in Inst |-> FALSE]
    /\ token = [i \in Inst |-> 0]
    /\ hi = 0
    /\ out = {}

AtMostOneServes(s) == \A i, j \in Inst : (i # j) => ~(s[i] /\ s[j])

Next ==
    \* a new token is one no other instance holds, and not the newest that served
    /\ \A i \in Inst : token'[i] # token[i] => token'[i] \notin {hi} \cup {token'[j] : j \in Inst \ {i}}
    /\ AtMostOneServes(serving')
    \* whoever serves holds a token at least as new as every one that served; it becomes the newest
    /\ \A i \in Inst : serving'[i] => token'[i] >= hi
    /\ hi' = IF \E i \in Inst : serving'[i]
             THEN LET i == CHOOSE j \in Inst : serving'[j] IN token'[i]
             ELSE hi
    \* fencing: a new success reply comes from an instance serving under the reply's epoch
    /\ \A e \in out' \ out : \E i \in Inst : serving[i] /\ token[i] = e

Spec == Init /\ [][Next]_vars

(* What the steps above keep true (checked on this module alone).          *)
ServingHoldsNewest == \A i \in Inst : serving[i] => token[i] = hi
=============================================================================
