"""The demo: ``services`` (the quotes service, the single-active ledger and their clients; run as
``python -m aegis.harness.demo``) and ``up`` (``aegis up``)."""
