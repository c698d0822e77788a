"""Three (or N) Debian hosts on this one machine for the deploy test: ``systemd-nspawn`` containers that boot their
own systemd, each in its own network namespace, joined by a bridge inside one dedicated lab network namespace.

* **Base root filesystem**: ``debootstrap --variant=minbase bookworm`` with systemd, dbus, python3(-venv),
  openssh-server, iproute2 and procps, from the mirror this machine's apt already uses; built once into the cache
  directory (``AEGIS_DEPLOY_CACHE``, default ``/var/cache/aegis-deploy-test``), never booted itself: each host gets
  an overlay (upper and work dirs in the run directory) with its own hostname, machine id, SSH host key and the
  controller's authorized key.
* **Network**: namespace ``aegis-lab-<pid>`` holds the bridge (10.20.0.1/24) and one veth per host; each host's
  namespace ``aegis-lab-<pid>-h<i>`` holds the other end (10.20.0.1<i>). This machine's own network namespace never
  gets an address or a route for them, and the lab has no way out. The controller's commands (ssh, ansible, the
  probes) run inside the lab namespace (``ip netns exec``).
* **Lifecycle**: :meth:`Lab.boot`, :meth:`Lab.power_cut` (SIGKILL of the container's init: a power loss),
  :meth:`Lab.poweroff` (``systemctl poweroff`` inside, SIGTERM/SIGKILL fallback), :meth:`Lab.teardown` (every
  container, mount and namespace this lab made; idempotent) and :meth:`Lab.leftovers` (what is still there).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from aegis.harness.cluster.processes import spawn

DEFAULT_CACHE = Path(os.environ.get("AEGIS_DEPLOY_CACHE", "/var/cache/aegis-deploy-test"))
SUITE = "bookworm"
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "python3-venv",
    "openssh-server",
    "iproute2",
    "procps",
)
SUBNET = "10.20.0"
BRIDGE_ADDRESS = f"{SUBNET}.1"


class LabError(RuntimeError):
    """A lab step failed (the message says which and why)."""


def run(argv: list[str], *, timeout: float = 120, check: bool = True, input: str | None = None) -> str:
    """Run ``argv``; its output; LabError with the output when it fails (and ``check``)."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, input=input)
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(argv)}: no answer within {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        raise LabError(
            f"{' '.join(argv)} exited {proc.returncode}: {(proc.stdout + proc.stderr).strip()[-2000:]}"
        )
    return proc.stdout


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources), else deb.debian.org."""
    for path in sorted(Path("/etc/apt").glob("sources.list.d/*.sources")) + [Path("/etc/apt/sources.list")]:
        try:
            text = path.read_text()
        except OSError:
            continue
        for block in text.split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", block, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", block, re.M)
            if uris and suites and SUITE in suites.group(1).split() and "security" not in uris.group(1):
                return uris.group(1)
        for line in text.splitlines():
            m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", line)
            if m:
                return m.group(1)
    return "http://deb.debian.org/debian"


def build_base(cache: Path = DEFAULT_CACHE, *, log: Path | None = None) -> Path:
    """The shared base root filesystem, built once with debootstrap (about a minute) into ``cache``."""
    base = cache / f"base-{SUITE}"
    stamp = base / ".aegis-base"
    wanted = ",".join(BASE_PACKAGES)
    if stamp.is_file() and stamp.read_text().strip() == wanted:
        return base
    if shutil.which("debootstrap") is None or shutil.which("systemd-nspawn") is None:
        raise LabError("debootstrap and systemd-nspawn are needed: make deploy-test-deps (apt)")
    tmp = cache / f"base-{SUITE}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    out = run(
        ["debootstrap", "--variant=minbase", f"--include={wanted}", SUITE, str(tmp), apt_mirror()],
        timeout=1200,
    )
    if log is not None:
        log.write_text(out)
    # Each host gets its own identity in its overlay: none in the base.
    for key in (tmp / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (tmp / "etc/machine-id").write_text("")
    # No console login prompts, no waiting for a network manager the lab does not have.
    for unit in ("getty@tty1.service", "console-getty.service", "systemd-networkd-wait-online.service"):
        (tmp / "etc/systemd/system" / unit).unlink(missing_ok=True)
        (tmp / "etc/systemd/system" / unit).symlink_to("/dev/null")
    shutil.rmtree(tmp / "var/cache/apt/archives", ignore_errors=True)
    (tmp / ".aegis-base").write_text(wanted + "\n")
    shutil.rmtree(base, ignore_errors=True)
    tmp.rename(base)
    return base


@dataclass
class Host:
    """One container: its name, address, namespace, overlay and (while booted) its nspawn process."""

    name: str
    address: str
    netns: str
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    boots: int = 0

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Lab:
    """The lab of one run: ``Lab(run_dir, n=3).up()``, then ``teardown()`` in a finally."""

    run_dir: Path
    n: int = 3
    cache: Path = DEFAULT_CACHE
    netns: str = field(default_factory=lambda: f"aegis-lab-{os.getpid()}")
    hosts: list[Host] = field(default_factory=list)
    base: Path | None = None
    _made_netns: list[str] = field(default_factory=list)
    _mounts: list[Path] = field(default_factory=list)

    # ------------------------------------------------------------------ paths and commands

    @property
    def key(self) -> Path:
        return self.run_dir / "ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.run_dir / "ssh" / "known_hosts"

    @property
    def control_dir(self) -> Path:
        return self.run_dir / "ssh" / "cm"

    def in_lab(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the lab's network namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def ssh_options(self) -> list[str]:
        return [
            "-i",
            str(self.key),
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=3",
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={self.control_dir}/%h",
            "-o",
            "ControlPersist=30",
        ]

    def ssh(self, host: Host, command: str, *, timeout: float = 60, check: bool = True) -> str:
        """Run ``command`` on ``host`` as root over SSH (from inside the lab)."""
        return run(
            self.in_lab(["ssh", *self.ssh_options(), f"root@{host.address}", command]),
            timeout=timeout,
            check=check,
        )

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    # ------------------------------------------------------------------ up

    def up(self, boot_timeout: float = 90) -> Lab:
        """Base rootfs (cached), namespaces and bridge, overlays, SSH identities; boot every host."""
        self.base = build_base(self.cache, log=self.run_dir / "debootstrap.log")
        (self.run_dir / "ssh").mkdir(parents=True, exist_ok=True)
        self.control_dir.mkdir(exist_ok=True)
        if not self.key.exists():
            run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "aegis-deploy-test",
                    "-f",
                    str(self.key),
                ]
            )
        self._network()
        known = []
        for h in self.hosts:
            self._overlay(h)
            known.append(f"{h.address} {(h.root / 'etc/ssh/ssh_host_ed25519_key.pub').read_text().strip()}")
        self.known_hosts.write_text("\n".join(known) + "\n")
        for h in self.hosts:
            self.boot(h, wait=False)
        for h in self.hosts:
            self.wait_booted(h, boot_timeout)
        return self

    def _ip(self, *args: str, ns: str | None = None) -> None:
        run(["ip", *(["-n", ns] if ns else []), *args], timeout=20)

    def _network(self) -> None:
        run(["ip", "netns", "add", self.netns])
        self._made_netns.append(self.netns)
        self._ip("link", "set", "lo", "up", ns=self.netns)
        self._ip("link", "add", "br0", "type", "bridge", ns=self.netns)
        self._ip("addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", "br0", ns=self.netns)
        self._ip("link", "set", "br0", "up", ns=self.netns)
        for i in range(1, self.n + 1):
            h = Host(f"aegis-{i}", f"{SUBNET}.{10 + i}", f"{self.netns}-h{i}", self.run_dir / f"aegis-{i}")
            self.hosts.append(h)
            run(["ip", "netns", "add", h.netns])
            self._made_netns.append(h.netns)
            self._ip("link", "set", "lo", "up", ns=h.netns)
            self._ip(
                "link",
                "add",
                f"veth-h{i}",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                h.netns,
                ns=self.netns,
            )
            self._ip("link", "set", f"veth-h{i}", "master", "br0", "up", ns=self.netns)
            self._ip("addr", "add", f"{h.address}/24", "dev", "eth0", ns=h.netns)
            self._ip("link", "set", "eth0", "up", ns=h.netns)

    def _overlay(self, h: Host) -> None:
        assert self.base is not None
        for d in ("upper", "work", "root"):
            (h.dir / d).mkdir(parents=True, exist_ok=True)
        run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={self.base},upperdir={h.dir / 'upper'},workdir={h.dir / 'work'}",
                str(h.root),
            ]
        )
        self._mounts.append(h.root)
        (h.root / "etc/hostname").write_text(h.name + "\n")
        (h.root / "etc/machine-id").write_text(os.urandom(16).hex() + "\n")
        hosts = ["127.0.0.1 localhost", f"127.0.1.1 {h.name}"]
        hosts += [f"{o.address} {o.name}" for o in self.hosts if o is not h]
        (h.root / "etc/hosts").write_text("\n".join(hosts) + "\n")
        hostkey = h.root / "etc/ssh/ssh_host_ed25519_key"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", h.name, "-f", str(hostkey)])
        ssh_dir = h.root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        auth = ssh_dir / "authorized_keys"
        auth.write_text(Path(f"{self.key}.pub").read_text())
        auth.chmod(0o600)

    # ------------------------------------------------------------------ power

    def boot(self, h: Host, *, wait: bool = True, timeout: float = 90) -> None:
        """Boot ``h`` (its overlay keeps its state between boots)."""
        if h.running:
            return
        h.boots += 1
        log = (h.dir / f"console-{h.boots}.log").open("wb")
        h.proc = spawn(
            [
                "systemd-nspawn",
                "--boot",
                "--register=no",
                "--keep-unit",
                f"--machine={h.name}",
                f"--directory={h.root}",
                f"--network-namespace-path=/run/netns/{h.netns}",
                "--console=pipe",
                "--link-journal=no",
                "--resolv-conf=off",
                "--timezone=off",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if wait:
            self.wait_booted(h, timeout)

    def wait_booted(self, h: Host, timeout: float = 90) -> float:
        """Until ``h`` answers SSH and its systemd is up (running or degraded); seconds it took."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        last = ""
        while time.monotonic() < deadline:
            if not h.running:
                raise LabError(f"{h.name}: systemd-nspawn exited ({self._console_tail(h)})")
            try:
                state = self.ssh(h, "systemctl is-system-running --wait", timeout=30, check=False).strip()
                if state in ("running", "degraded"):
                    return time.monotonic() - t0
                last = state
            except LabError as exc:
                last = str(exc)
            time.sleep(0.5)
        raise LabError(
            f"{h.name} did not boot within {timeout:.0f} s (last: {last}; {self._console_tail(h)})"
        )

    def _console_tail(self, h: Host) -> str:
        try:
            return (h.dir / f"console-{h.boots}.log").read_text(errors="replace")[-1500:]
        except OSError:
            return "no console log"

    def _init_pid(self, h: Host) -> int | None:
        """PID (here) of the container's init: the child of our systemd-nspawn."""
        if h.proc is None:
            return None
        try:
            children = Path(f"/proc/{h.proc.pid}/task/{h.proc.pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def power_cut(self, h: Host, timeout: float = 20) -> None:
        """A power loss: SIGKILL to the container's init (the whole container dies at once, nothing shuts down)."""
        pid = self._init_pid(h)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        elif h.proc is not None and h.proc.poll() is None:
            h.proc.kill()  # no init found: nspawn itself (the container dies with it)
        self._wait_exit(h, timeout)

    def poweroff(self, h: Host, timeout: float = 60) -> None:
        """A clean shutdown: ``systemctl poweroff`` inside; SIGTERM then SIGKILL to nspawn if it takes longer."""
        if not h.running:
            return
        self.ssh(h, "systemctl poweroff --no-block", timeout=15, check=False)
        if self._wait_exit(h, timeout, kill=False):
            return
        assert h.proc is not None
        h.proc.terminate()
        if not self._wait_exit(h, 15, kill=False):
            self.power_cut(h)

    def _wait_exit(self, h: Host, timeout: float, *, kill: bool = True) -> bool:
        if h.proc is None:
            return True
        try:
            h.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            if kill:
                h.proc.kill()
                h.proc.wait(10)
            return False

    # ------------------------------------------------------------------ down

    def teardown(self) -> None:
        """Stop every container, close SSH masters, unmount the overlays, delete the namespaces. Idempotent."""
        for h in self.hosts:
            try:
                self.poweroff(h, timeout=40)
            except (LabError, OSError, subprocess.SubprocessError):
                if h.running:
                    self.power_cut(h)
        ssh_dir = self.run_dir / "ssh"
        for sock in (p for p in ssh_dir.rglob("*") if p.is_socket()) if ssh_dir.is_dir() else []:
            subprocess.run(
                ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "dummy"],
                capture_output=True,
                timeout=10,
                check=False,
            )
        for mnt in reversed(self._mounts):
            if subprocess.run(["umount", str(mnt)], capture_output=True, check=False).returncode != 0:
                subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
        self._mounts.clear()
        for ns in reversed(self._made_netns):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)
        self._made_netns.clear()

    def leftovers(self) -> list[str]:
        """What of this lab is still there: processes, mounts, namespaces (empty after a clean teardown)."""
        found = []
        for h in self.hosts:
            if h.running:
                found.append(f"process: systemd-nspawn of {h.name} (pid {h.proc.pid if h.proc else '?'})")
        marker = str(self.run_dir)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd:
                found.append(f"process {proc.name}: {cmd.strip()[:200]}")
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            if marker in line:
                found.append(f"mount: {line.split()[4]}")
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
        for line in listed.splitlines():
            name = line.split()[0] if line.split() else ""
            if name == self.netns or name.startswith(self.netns + "-"):
                found.append(f"network namespace: {name}")
        roots = [str(h.root) for h in self.hosts]
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    root = os.readlink(proc / "root")
                except OSError:
                    continue
                if any(root == r or root.startswith(r + "/") for r in roots):
                    found.append(f"process {proc.name}: still running inside a lab host's root ({root})")
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False).stdout
        if re.search(r"\bveth-h\d+\b", links):
            found.append("link: a lab veth in this machine's own network namespace")
        return found
