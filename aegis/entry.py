"""The ``aegis`` console script: the command-line interface needs the ``cli`` extra (typer, rich), which the SDK's
base install leaves out; without it the command says which extra to install instead of raising an ImportError."""

from __future__ import annotations

import sys

_CLI_MODULES = frozenset({"typer", "rich", "click"})


def main() -> None:
    """Run ``aegis.cli.app``, or say that the ``cli`` extra is missing (exit code 2)."""
    try:
        from aegis.cli import app
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if missing not in _CLI_MODULES:
            raise
        sys.stderr.write(
            f"the aegis command needs the 'cli' extra ({missing} is not installed): pip install 'aegis[cli]'\n"
        )
        raise SystemExit(2) from None
    app()
