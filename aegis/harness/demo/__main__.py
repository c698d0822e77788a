"""``python -m aegis.harness.demo serve|serve-active ...``: the demo instance processes (:mod:`aegis.harness.demo.services`)."""

from aegis.harness.demo.services import main

if __name__ == "__main__":
    main()
