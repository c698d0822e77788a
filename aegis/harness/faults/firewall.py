"""Network partitions between local processes on loopback, with nftables.

Mechanism (verified on this machine, nftables 1.0.6, kernel 6.x, as root)
------------------------------------------------------------------------
Every packet on ``lo`` is locally generated, so all of it passes the ``output`` hook, where the kernel
still knows the sending socket. We give each process we may want to cut its own **group id** at spawn
time (``subprocess.Popen(..., group=gid)``: uid stays 0, so file permissions do not change) and match:

* packets a process sends **as a client** (to a peer's listening port) with
  ``meta skgid <gid> tcp dport <peer ports>``. This also blocks new connection attempts (the SYN
  comes from a full socket that carries the gid).
* packets a process sends **as a server** (from its listening port, on a connection a peer opened).
  Those leave from the listener's port towards an ephemeral port we do not know, and their socket
  carries the *server's* gid. We therefore tag each connection in conntrack with the **client's**
  gid: ``tcp dport <server ports> ct mark set meta skgid map { <client gid> : <client gid> }`` (any
  packet the client sends sets it; conntrack picks up connections that existed before the table,
  ``nf_conntrack_tcp_loose``), then drop ``tcp sport <server ports> ct mark <client gid>``. SYN-ACKs
  and RSTs, sent from request sockets without a gid, are caught by the same ``sport`` + mark rule.

Verified with two plain TCP processes (gids 60001/60002) on an established connection that existed
before the table was created: each rule alone stopped the echo within one round trip, and removing it
restored it (``tests/test_nemesis.py`` pins both directions).

Where a process has no gid, its current connections can still be cut by their local ports
(:attr:`Endpoint.client_ports`, e.g. read from ``/proc`` with :func:`local_ports_to`); new connections
it opens then escape the cut.

Everything lives in ONE table of our own, ``inet aegis_nemesis_<pid>_<n>``; other tables are never
read or changed. Each cut is a regular chain reached by a ``jump`` from our ``output`` base chain, so a
cut is healed by an atomic transaction (``nft -f -``) that drops its jump and its chain. The conntrack
marks we set are only on connections to our own ports, and only the rules in our table read them.
:meth:`Firewall.close` deletes the table; an :mod:`atexit` hook closes every firewall left open.
After a ``kill -9`` of the Python process the table stays; :func:`stale_tables` /
:func:`remove_stale_tables` find and delete our tables whose owner pid is gone.

Without ``nft`` or without permission (not root), :class:`FirewallUnavailable` is raised; callers
(the nemesis) skip only partition faults and say why.

Example::

    fw = Firewall()                                   # raises FirewallUnavailable
    a = Endpoint("n1", gid=n1.gid, ports=frozenset({n1.cluster_port}))
    b = Endpoint("n2", gid=n2.gid, ports=frozenset({n2.cluster_port}))
    cut = fw.cut(a, b)                                # both directions
    ...
    fw.heal(cut)                                      # or fw.heal() for all
    fw.close()                                        # deletes the table
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Cut",
    "Endpoint",
    "Firewall",
    "FirewallError",
    "FirewallUnavailable",
    "local_ports_to",
    "remove_stale_tables",
    "stale_tables",
]

log = logging.getLogger(__name__)

TABLE_PREFIX = "aegis_nemesis_"


class FirewallError(RuntimeError):
    """An ``nft`` command failed."""


class FirewallUnavailable(FirewallError):
    """nftables cannot be used here (binary missing, not root / no CAP_NET_ADMIN)."""


# --------------------------------------------------------------------------------------------------
# /proc helpers
# --------------------------------------------------------------------------------------------------


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        entries = list(fd_dir.iterdir())
    except OSError:
        return inodes
    for fd in entries:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def local_ports_to(pid: int, remote_ports: Iterable[int]) -> dict[int, int]:
    """Established TCP connections of process ``pid`` to 127.0.0.1:``remote_ports``.

    Returns ``{local_port: remote_port}`` (read from ``/proc/<pid>/fd`` and ``/proc/<pid>/net/tcp``).
    This is how the nemesis finds which server an SDK instance is connected to, by pid alone.
    """
    wanted = set(remote_ports)
    inodes = _socket_inodes(pid)
    out: dict[int, int] = {}
    try:
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        f = line.split()
        if len(f) < 10:
            continue
        local, remote, state, inode = f[1], f[2], f[3], int(f[9])
        if state != "01" or inode not in inodes:  # 01 = ESTABLISHED
            continue
        rport = int(remote.split(":")[1], 16)
        if rport in wanted:
            out[int(local.split(":")[1], 16)] = rport
    return out


# --------------------------------------------------------------------------------------------------
# Endpoints and cuts
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One side of a cut: a process (or a set of them) on 127.0.0.1.

    ``gid``: the group id its sockets carry (set at spawn), or None. ``ports``: the listening ports that
    belong to this cut (a node's cluster port for route cuts, its client port for instance cuts).
    ``client_ports``: local ports of connections it opened, when it has no gid (a snapshot).
    """

    name: str
    gid: int | None = None
    ports: frozenset[int] = frozenset()
    client_ports: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Cut:
    """A set of drop rules installed together (one nft chain). ``pairs`` are (sender, receiver) names."""

    id: int
    chain: str
    pairs: tuple[tuple[str, str], ...]
    rules: tuple[str, ...] = field(repr=False)


def _set(values: Iterable[int]) -> str:
    vs = sorted(set(values))
    return str(vs[0]) if len(vs) == 1 else "{ " + ", ".join(map(str, vs)) + " }"


def one_way_rules(src: Endpoint, dst: Endpoint) -> list[str]:
    """nft rule bodies that drop every TCP packet ``src`` sends to ``dst`` (see module docstring)."""
    rules: list[str] = []
    # src as the client of dst's listeners.
    if dst.ports:
        if src.gid is not None:
            rules.append(f"meta skgid {src.gid} tcp dport {_set(dst.ports)} counter drop")
        if src.client_ports:
            rules.append(f"tcp sport {_set(src.client_ports)} tcp dport {_set(dst.ports)} counter drop")
    # src as the server of connections dst opened to src's listeners.
    if src.ports:
        if dst.gid is not None:
            rules.append(
                f"tcp dport {_set(src.ports)} ct mark set meta skgid map {{ {dst.gid} : {dst.gid} }}"
            )
            rules.append(f"tcp sport {_set(src.ports)} ct mark {dst.gid} counter drop")
        if dst.client_ports:
            rules.append(f"tcp sport {_set(src.ports)} tcp dport {_set(dst.client_ports)} counter drop")
    return rules


# --------------------------------------------------------------------------------------------------
# The firewall
# --------------------------------------------------------------------------------------------------

_live: set[Firewall] = set()
_live_lock = threading.Lock()
_table_counter = itertools.count(1)


def _close_all() -> None:
    with _live_lock:
        fws = list(_live)
    for fw in fws:
        try:
            fw.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            log.exception("closing firewall table %s failed", fw.table)


atexit.register(_close_all)


class Firewall:
    """Partitions between local processes, in one nftables table of our own (``inet <table>``).

    The table is created on construction (which raises :class:`FirewallUnavailable` when nft cannot
    be used) and deleted by :meth:`close` (idempotent; also at interpreter exit). Thread-safe.
    """

    def __init__(self, table: str | None = None, *, nft: str = "nft") -> None:
        """Create the table ``inet <table>`` (default ``aegis_nemesis_<pid>_<n>``) with an output chain.

        ``nft``: the binary (a path or a command name). Raises :class:`FirewallUnavailable`.
        """
        path = nft if os.sep in nft else shutil.which(nft)
        if path is None or not os.path.isfile(path) or not os.access(path, os.X_OK):
            raise FirewallUnavailable(f"nft binary not found: {nft!r} (install Debian package nftables)")
        self.nft = path
        self.table = table or f"{TABLE_PREFIX}{os.getpid()}_{next(_table_counter)}"
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.table):
            raise ValueError(f"bad table name {self.table!r}")
        self._lock = threading.RLock()
        self._cuts: dict[int, Cut] = {}
        self._ids = itertools.count(1)
        self._closed = False
        try:
            self._run(
                f"add table inet {self.table}\n"
                f"add chain inet {self.table} output "
                "{ type filter hook output priority 0; policy accept; }\n"
            )
        except FirewallError as e:
            if isinstance(e, FirewallUnavailable):
                raise
            raise FirewallUnavailable(f"cannot create nft table {self.table}: {e}") from e
        with _live_lock:
            _live.add(self)

    # ---------------------------------------------------------------- nft

    def _run(self, script: str) -> str:
        try:
            r = subprocess.run(
                [self.nft, "-f", "-"], input=script, capture_output=True, text=True, timeout=10
            )
        except FileNotFoundError as e:
            raise FirewallUnavailable(f"nft binary not found: {self.nft}") from e
        except PermissionError as e:
            raise FirewallUnavailable(f"nft not executable: {e}") from e
        if r.returncode != 0:
            err = r.stderr.strip()
            if "Operation not permitted" in err or "Permission denied" in err:
                raise FirewallUnavailable(f"nft needs root / CAP_NET_ADMIN: {err}")
            raise FirewallError(f"nft failed ({r.returncode}): {err}\nscript:\n{script}")
        return r.stdout

    def _base_chain_script(self, cuts: Iterable[Cut]) -> str:
        lines = [f"flush chain inet {self.table} output"]
        lines += [f"add rule inet {self.table} output jump {c.chain}" for c in cuts]
        return "\n".join(lines) + "\n"

    # ---------------------------------------------------------------- cuts

    @property
    def cuts(self) -> list[Cut]:
        """The cuts in force, oldest first."""
        with self._lock:
            return list(self._cuts.values())

    def cut_one_way(self, src: Endpoint, dst: Endpoint) -> Cut:
        """Drop every packet ``src`` sends to ``dst``; ``dst`` -> ``src`` still flows."""
        return self.cut_pairs([(src, dst)])

    def cut(self, a: Endpoint, b: Endpoint) -> Cut:
        """Cut ``a`` and ``b`` apart, both directions."""
        return self.cut_pairs([(a, b), (b, a)])

    def cut_sets(self, side_a: Sequence[Endpoint], side_b: Sequence[Endpoint]) -> Cut:
        """Cut every member of ``side_a`` from every member of ``side_b`` (both directions); members
        of the same side still reach each other. A majority/minority partition of a cluster."""
        pairs = [(x, y) for x in side_a for y in side_b] + [(y, x) for x in side_a for y in side_b]
        return self.cut_pairs(pairs)

    def cut_pairs(self, pairs: Sequence[tuple[Endpoint, Endpoint]]) -> Cut:
        """Install one cut made of one-way drops ``(sender, receiver)``, atomically.

        Raises :class:`FirewallError` when a pair yields no rule (neither side has what the rules
        need: a gid or client ports on the sender, ports on the receiver, or the other way round).
        """
        rules: list[str] = []
        for src, dst in pairs:
            r = one_way_rules(src, dst)
            if not r:
                raise FirewallError(
                    f"cannot cut {src.name} -> {dst.name}: no gid/ports to match on ({src}, {dst})"
                )
            rules += r
        with self._lock:
            self._check_open()
            cid = next(self._ids)
            chain = f"cut_{cid}"
            cut = Cut(
                id=cid, chain=chain, pairs=tuple((s.name, d.name) for s, d in pairs), rules=tuple(rules)
            )
            script = f"add chain inet {self.table} {chain}\n"
            script += "".join(f"add rule inet {self.table} {chain} {r}\n" for r in rules)
            script += self._base_chain_script([*self._cuts.values(), cut])
            self._run(script)
            self._cuts[cid] = cut
            log.info("nft cut %s installed: %s", chain, cut.pairs)
            return cut

    def heal(self, cut: Cut | None = None) -> None:
        """Remove ``cut`` (all cuts when None). Healing a cut twice is harmless."""
        with self._lock:
            if self._closed:
                return
            gone = list(self._cuts.values()) if cut is None else [c for c in [self._cuts.get(cut.id)] if c]
            if not gone:
                return
            keep = [c for c in self._cuts.values() if c not in gone]
            script = self._base_chain_script(keep)
            for c in gone:
                script += (
                    f"flush chain inet {self.table} {c.chain}\ndelete chain inet {self.table} {c.chain}\n"
                )
            self._run(script)
            for c in gone:
                self._cuts.pop(c.id, None)

    def counters(self) -> dict[str, int]:
        """Packets dropped so far per cut chain (``{"cut_1": 42}``), from the rules' counters."""
        with self._lock:
            if self._closed:
                return {}
            text = self._run(f"list table inet {self.table}\n")
        out: dict[str, int] = {}
        chain = ""
        for line in text.splitlines():
            m = re.match(r"\s*chain (\S+) \{", line)
            if m:
                chain = m.group(1)
                continue
            for pk in re.findall(r"counter packets (\d+)", line):
                out[chain] = out.get(chain, 0) + int(pk)
        return out

    def ruleset(self) -> str:
        """``nft list table inet <table>`` (for reports and debugging)."""
        with self._lock:
            return "" if self._closed else self._run(f"list table inet {self.table}\n")

    def close(self) -> None:
        """Delete the table (every cut heals). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._cuts.clear()
            with _live_lock:
                _live.discard(self)
            try:
                self._run(f"delete table inet {self.table}\n")
            except FirewallError as e:
                if "No such file or directory" not in str(e):
                    raise

    def _check_open(self) -> None:
        if self._closed:
            raise FirewallError(f"firewall table {self.table} is closed")

    def __enter__(self) -> Firewall:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Firewall inet {self.table} cuts={[c.chain for c in self.cuts]}>"


def stale_tables(nft: str = "nft") -> list[str]:
    """Our tables (``aegis_nemesis_<pid>_<n>``) whose owner pid no longer exists (left by a kill -9)."""
    r = subprocess.run([nft, "list", "tables"], capture_output=True, text=True, timeout=10)
    out = []
    for m in re.finditer(rf"table inet ({TABLE_PREFIX}(\d+)_\d+)", r.stdout):
        if not Path(f"/proc/{m.group(2)}").exists():
            out.append(m.group(1))
    return out


def remove_stale_tables(nft: str = "nft") -> list[str]:
    """Delete :func:`stale_tables`; returns their names. Only touches tables named by this module."""
    gone = stale_tables(nft)
    for t in gone:
        subprocess.run([nft, "delete", "table", "inet", t], capture_output=True, timeout=10)
    return gone
