"""The deployment's own harness: ``permissions`` (the NATS permissions of ``playbooks/``, rendered from the secure
cluster's model), ``lab`` (three ``systemd-nspawn`` hosts in one lab network namespace) and ``scenario`` (the
deploy test: ``python -m aegis.harness.deploy``, ``make deploy-test``)."""
