"""TEST-ONLY instance program with fencing switched off: the split-brain checker's negative control.

``python -m tests.unfenced_instance serve-active ...`` is :mod:`aegis.harness.demo` (same command line) with one
change: every :class:`~aegis.sdk.single_active.SingleActiveService` uses :class:`UnfencedElection`, whose
``serving()`` stays True once the instance was active: it ignores its serving deadline and lost
compare-and-sets. A paused active therefore wakes up and keeps answering exclusive calls under its old epoch
after its successor took over: a real split brain, made by real processes, that the prober and
:func:`aegis.harness.campaign.checkers.split_brain` must report. Nothing shipped can switch fencing off; only this module
(under ``tests/``) does, by replacing the class attribute before the demo starts.
"""

from __future__ import annotations

from aegis.sdk.election import Election
from aegis.sdk.single_active import SingleActiveService


class UnfencedElection(Election):
    """The SDK's election, except that it never stops serving once it was active (until a graceful stop)."""

    def serving(self, now: float) -> bool:
        # epoch is set by the first acquire that lands and never cleared: "was once active"
        return self.epoch > 0 and not self.stopping


def main() -> None:
    from aegis.harness.demo import services as demo

    SingleActiveService.election_class = UnfencedElection
    demo.main()


if __name__ == "__main__":
    main()
