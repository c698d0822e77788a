"""``python -m aegis.harness.deploy``: the deploy test (:mod:`aegis.harness.deploy.scenario`)."""

from aegis.harness.deploy.scenario import main

if __name__ == "__main__":
    main()
