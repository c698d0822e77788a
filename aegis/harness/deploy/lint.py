"""``make deploy-lint``: the quick checks of ``playbooks/`` that need no host.

* ``ansible-lint --profile production`` over the playbooks and roles;
* ``ansible-playbook --syntax-check`` of ``site.yml``, ``rolling-restart.yml`` and ``tests/render.yml``;
* every host's NATS config, environment files and systemd units rendered by the roles' own templates
  (``playbooks/tests/render.yml``: the preflight checks run first, so a bad inventory fails here too), each NATS
  config accepted by ``nats-server -t`` and each unit by ``systemd-analyze verify`` (when the machine has it).

``python -m aegis.harness.deploy.lint [--inventory playbooks/inventory/example/hosts.yml]``; tests/test_deploy_lint.py
runs the same functions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PLAYBOOKS = ROOT / "playbooks"
EXAMPLE_INVENTORY = PLAYBOOKS / "inventory" / "example" / "hosts.yml"
PLAYBOOK_FILES = ("site.yml", "rolling-restart.yml", "tests/render.yml")


@dataclass
class Check:
    """One check's verdict, what it printed (the tail) and how long it took."""

    name: str
    ok: bool
    seconds: float
    output: str = ""
    skipped: bool = False

    def line(self) -> str:
        verdict = "skipped" if self.skipped else ("ok" if self.ok else "FAILED")
        return f"{verdict:8} {self.name} ({self.seconds:.1f} s)"


def tool(name: str) -> str:
    """``name`` from this interpreter's venv (where the deploy extra installs it), else from PATH."""
    here = Path(sys.executable).parent / name
    if here.is_file():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: pip install -e '.[deploy]' (or make setup)")
    return found


def ansible_env() -> dict[str, str]:
    """The environment of ansible commands: the playbooks' ansible.cfg, no colour, no cows."""
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_NOCOWS": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def _run(name: str, argv: list[str], *, cwd: Path = PLAYBOOKS, timeout: float = 300) -> Check:
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            argv, cwd=cwd, env=ansible_env(), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return Check(name, False, time.monotonic() - t0, f"timed out after {timeout:.0f} s")
    out = (proc.stdout + proc.stderr).strip()
    return Check(name, proc.returncode == 0, time.monotonic() - t0, out[-6000:])


def ansible_lint() -> Check:
    """ansible-lint with the production profile, offline (no Galaxy here)."""
    return _run(
        "ansible-lint --profile production",
        [tool("ansible-lint"), "--offline", "--profile", "production", "."],
    )


def syntax_check(inventory: Path = EXAMPLE_INVENTORY) -> Check:
    return _run(
        "ansible-playbook --syntax-check",
        [tool("ansible-playbook"), "--syntax-check", "-i", str(inventory), *PLAYBOOK_FILES],
    )


def render(inventory: Path, work: Path) -> Check:
    """Render every host's files into ``work/render`` (CA and secrets made in ``work/pki``), no host contacted."""
    work.mkdir(parents=True, exist_ok=True)
    extra = {
        "render_dir": str(work / "render"),
        "aegis_render_only": True,
        "aegis_pki_dir": str(work / "pki"),
        # Rendered units name local executables, so that systemd-analyze verify can check them.
        "nats_server_binary_path": tool("nats-server"),
        "aegis_venv": sys.prefix,
    }
    vars_file = work / "render-vars.json"
    vars_file.write_text(json.dumps(extra))
    return _run(
        f"render ({inventory.parent.name} inventory)",
        [tool("ansible-playbook"), "-i", str(inventory), "tests/render.yml", "-e", f"@{vars_file}"],
    )


def nats_configs_check(render_dir: Path) -> Check:
    """``nats-server -t -c`` of every rendered NATS config."""
    t0 = time.monotonic()
    confs = sorted(render_dir.glob("*/nats-server.conf"))
    if not confs:
        return Check("nats-server -t of the rendered configs", False, 0.0, f"no config under {render_dir}")
    bad = []
    for conf in confs:
        proc = subprocess.run(
            [tool("nats-server"), "-t", "-c", str(conf)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if proc.returncode != 0:
            bad.append(f"{conf}: {(proc.stdout + proc.stderr).strip()}")
    return Check(
        f"nats-server -t of {len(confs)} rendered configs", not bad, time.monotonic() - t0, "\n".join(bad)
    )


def units_check(render_dir: Path) -> Check:
    """``systemd-analyze verify`` of every rendered unit: any warning fails (it exits 0 on unknown keys)."""
    t0 = time.monotonic()
    units = sorted(render_dir.glob("*/*.service"))
    analyze = shutil.which("systemd-analyze")
    name = f"systemd-analyze verify of {len(units)} rendered units"
    if analyze is None:
        return Check(name, True, 0.0, "systemd-analyze is not installed", skipped=True)
    if not units:
        return Check(name, False, 0.0, f"no unit under {render_dir}")
    bad = []
    for unit in units:
        proc = subprocess.run(
            [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
        )
        out = (proc.stdout + proc.stderr).strip()
        if proc.returncode != 0 or out:
            bad.append(f"{unit}: {out}")
    return Check(name, not bad, time.monotonic() - t0, "\n".join(bad))


def run_all(
    inventory: Path = EXAMPLE_INVENTORY, work: Path | None = None, *, lint: bool = True
) -> list[Check]:
    """Every check, in order; rendering-based ones only when the rendering worked."""
    checks = []
    if lint:
        checks.append(ansible_lint())
    checks.append(syntax_check(inventory))
    with tempfile.TemporaryDirectory(prefix="aegis-deploy-lint-") as tmp:
        base = work or Path(tmp)
        rendered = render(inventory, base)
        checks.append(rendered)
        if rendered.ok:
            checks.append(nats_configs_check(base / "render"))
            checks.append(units_check(base / "render"))
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--inventory", type=Path, default=EXAMPLE_INVENTORY)
    parser.add_argument("--no-lint", action="store_true", help="skip ansible-lint (the slowest check)")
    args = parser.parse_args()
    checks = run_all(args.inventory.resolve(), lint=not args.no_lint)
    for c in checks:
        print(c.line())
        if not c.ok and c.output:
            print("    " + c.output.replace("\n", "\n    "))
    sys.exit(0 if all(c.ok for c in checks) else 1)


if __name__ == "__main__":
    main()
