"""Local ``nats-server`` clusters and the processes the harness starts: ``local`` (:class:`LocalCluster`),
``processes`` (children that die with us), ``ports`` (free loopback ports), ``gids`` (group ids that label a
process's sockets for partitions)."""
