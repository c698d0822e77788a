"""``aegis up``: a local cluster and the demo (:mod:`aegis.harness.demo.up`), until Ctrl-C or ``--duration``."""

from __future__ import annotations

import typer
from rich.console import Console


def up_command(
    nodes: int = 3,
    instances: int = 2,
    rate: float = 200.0,
    duration: float = 0,
    secure: bool = False,
    management_port: int | None = None,
    dashboard: bool = True,
) -> None:
    """Run the demo with a live status line; exits with its code. ``secure``: TLS, accounts, a user per role."""
    from aegis.harness.demo.up import run_up

    code = run_up(
        nodes=nodes,
        instances=instances,
        rate=rate,
        duration=duration,
        console=Console(),
        secure=secure,
        management_port=management_port,
        dashboard=dashboard,
    )
    raise typer.Exit(code)
