"""Fault campaigns, the Jepsen shape: ``runner`` (``aegis campaign``: the one fault loop) runs a campaign
(``schema``: the YAML of ``harness/campaigns/*.yaml``) on the single-active group under test (``rig``: its processes,
``group``, and its two workloads, the sticky ``workload`` and the split-brain ``prober``) with the other
``workload`` s (``command_worker``: a worker process), all writing one ``history``; ``checkers`` judge it after
the run and ``report`` renders it. ``failover`` is ``aegis failover``: a built-in campaign and its report."""
