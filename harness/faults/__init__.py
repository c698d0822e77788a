"""Fault injection: ``nemesis`` (faults on instances, nodes and the network, as data) and ``firewall`` (nftables
partitions on loopback)."""
