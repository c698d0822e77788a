"""Aegis: sticky single-active services on NATS (``aegis.sdk``), with a simulator (``aegis.sim``), a fault-injection
harness (``aegis.harness``) and TLA+ runners (``aegis.spec``)."""

__version__ = "0.3.0"
