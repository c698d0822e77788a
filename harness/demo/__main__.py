"""``python -m harness.demo serve|serve-active ...``: the demo instance processes (:mod:`harness.demo.services`)."""

from harness.demo.services import main

if __name__ == "__main__":
    main()
