"""What the deploy test runs inside the lab's network namespace, as a client of the deployed cluster.

``python -m aegis.harness.deploy.probe sticky --out calls.ndjson --servers URL,... --user client-probe ...``
    calls the single-active ``ledger`` group's ``book`` through the SDK's sticky client at a steady rate and writes
    one NDJSON line per call (``t`` wall-clock send time, ``ok``, ``instance``, ``epoch``, ``error``) until stdin
    closes, SIGTERM, or ``--max-s``.
``python -m aegis.harness.deploy.probe api --mgmt URL --dash URL --admin-password-file FILE``
    prints one JSON object: the management API without and with a token, its groups, instances and cluster view,
    and the dashboard's login page status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import stat
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from aegis.harness.demo.services import ACTIVE_SERVICE, BookRequest
from aegis.sdk.config import load_settings
from aegis.sdk.connection import ConnectionPool
from aegis.sdk.errors import AegisError
from aegis.sdk.sticky import StickyClient


async def sticky(args: argparse.Namespace, out: TextIO) -> None:
    settings = load_settings(
        servers=args.servers.split(","),
        user=args.user,
        password_file=args.password_file,
        tls_ca=args.ca,
        tls_cert=args.cert,
        tls_key=args.key,
        inbox_prefix=f"_INBOX.{args.user}",
        name="deploy-test-probe",
    )
    pool = await ConnectionPool.connect(settings)
    client = StickyClient(pool, election=args.election)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode):

        class _Eof(asyncio.Protocol):
            def connection_lost(self, exc: Exception | None) -> None:
                stop.set()

        await loop.connect_read_pipe(_Eof, sys.stdin)
    period = 1.0 / args.rate
    deadline = time.monotonic() + args.max_s
    n = 0
    print("ready", flush=True)
    # one line per call, flushed: the test reads the file while this runs
    while not stop.is_set() and time.monotonic() < deadline:
        n += 1
        t0, wall = time.perf_counter(), time.time()
        rec: dict[str, Any] = {"t": wall, "ok": False}
        try:
            reply = await client.call_active(
                args.service, "book", BookRequest(ref=f"probe-{n}", amount=n), timeout=args.timeout
            )
            rec.update(ok=True, instance=reply["instance"], epoch=int(reply["epoch"]))
        except AegisError as exc:
            rec["error"] = f"{type(exc).__name__}: {exc.message}"
        rec["latency_s"] = round(time.perf_counter() - t0, 6)
        out.write(json.dumps(rec) + "\n")
        out.flush()
        await asyncio.sleep(max(0.0, period - (time.perf_counter() - t0)))
    await client.close()
    await pool.close()


def api(args: argparse.Namespace) -> None:
    import httpx

    out: dict[str, Any] = {}
    with httpx.Client(timeout=10, trust_env=False) as http:
        out["mgmt_no_token_status"] = http.get(f"{args.mgmt}/api/instances").status_code
        password = Path(args.admin_password_file).read_text().strip()
        r = http.post(f"{args.mgmt}/api/token", data={"username": "admin", "password": password})
        out["mgmt_login_status"] = r.status_code
        if r.status_code == 200:
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
            for name in ("instances", "groups", "cluster"):
                resp = http.get(f"{args.mgmt}/api/{name}", headers=auth)
                out[f"mgmt_{name}_status"] = resp.status_code
                out[name] = resp.json() if resp.status_code == 200 else resp.text[:500]
        try:
            out["dashboard_login_status"] = http.get(f"{args.dash}/login").status_code
        except httpx.HTTPError as exc:
            out["dashboard_login_status"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sticky")
    s.add_argument("--out", required=True)
    s.add_argument("--servers", required=True)
    s.add_argument("--user", required=True)
    s.add_argument("--password-file", required=True)
    s.add_argument("--ca", required=True)
    s.add_argument("--cert", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--service", default=ACTIVE_SERVICE)
    s.add_argument("--election", choices=("lease", "quorum"), default="lease", help="the group's lease")
    s.add_argument("--rate", type=float, default=20.0)
    s.add_argument("--timeout", type=float, default=2.0)
    s.add_argument("--max-s", type=float, default=900.0)
    a = sub.add_parser("api")
    a.add_argument("--mgmt", required=True)
    a.add_argument("--dash", required=True)
    a.add_argument("--admin-password-file", required=True)
    args = parser.parse_args()
    if args.cmd == "sticky":
        with Path(args.out).open("a") as out:
            asyncio.run(sticky(args, out))
    else:
        api(args)


if __name__ == "__main__":
    main()
