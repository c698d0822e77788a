"""Fault injection: ``fault`` (the one fault description, :class:`~aegis.harness.faults.fault.Fault`), ``nemesis``
(applies and heals faults on instances, nodes and the network) and ``firewall`` (nftables partitions on
loopback)."""
