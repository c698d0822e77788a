"""The SimPy simulator of the single-active election: the SDK's own state machine (``aegis.sdk.election``) under
thousands of simulated faults, far faster than real time.

Modules: ``kv`` (the election key: revisions, compare-and-set, TTL expiry, watches, outages), ``instance`` (a
process driving the SDK's ``Election``), ``client`` (sticky clients with epoch checks), ``faults`` (fault mixes and
distributions), ``checks`` (safety properties, failover times), ``tracelog`` (events in the spec's trace format),
``run`` (one deterministic run per seed), ``controls`` (negative controls), ``campaign`` (runs x mixes x
parameters), ``report`` (JSON + Bokeh HTML). ``aegis sim`` is the command.

The quorum lease (``aegis.sdk.quorum_election``, ``aegis sim --election quorum``): ``quorum_kv`` (three buckets,
stalls, placements), ``quorum_instance`` (a process driving the SDK's ``QuorumElection`` on the shared process
model of ``instance``, and its sticky client), ``quorum_run`` (NATS node crashes, its checks, the gap per fault,
its campaign).
"""
