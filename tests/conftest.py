"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.cluster import LocalCluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """A started 3-node JetStream cluster on 127.0.0.1, shared by the whole session.

    Tests that kill, stop or pause a node must bring it back before they end.
    """
    with LocalCluster(3) as c:
        yield c


@pytest.fixture(scope="session")
def nats_urls(cluster: LocalCluster) -> list[str]:
    """Client URLs (``nats://127.0.0.1:<port>``) of every node of :func:`cluster`."""
    return cluster.urls
