"""Fault campaigns and the failover measurement: ``runner`` (``aegis campaign``), ``schema`` (the YAML of
``harness/campaigns/*.yaml``), ``report``, ``workload``, ``command_worker`` (a worker process), ``checkers`` (pure
judgements of a history) and ``failover`` (``aegis failover`` and the single-active rig campaigns run)."""
