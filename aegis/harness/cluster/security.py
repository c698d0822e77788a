"""Accounts, users, least-privilege permissions and certificates of a secure :class:`LocalCluster`.

A secure cluster (``LocalCluster(secure=True)`` or ``secure=SecurityConfig(...)``) runs every node with TLS for
clients (mutual TLS: a client needs a certificate of the cluster's CA as well as its password) and for routes, an
application account ``AEGIS`` (JetStream on) and the system account ``SYS``, and one NATS user per role:

* ``svc-<name>`` per service: serves its own ``aegis.rpc.<name>.>``, ``aegis.direct.<name>.>``,
  ``aegis.ctl.<name>.>`` and ``$SRV`` subjects, writes its own registry record, election keys, command records and
  metrics, calls other services, publishes events and commands, uses the JetStream API of the Aegis streams only;
* ``management``: reads the KV buckets and streams, writes service definitions (compare-and-set), asks instances
  for their effective configuration (``aegis.ctl.*.*.config``) and ``$SRV`` discovery; it may not call services
  (``aegis.rpc.>`` and ``aegis.direct.>`` are denied);
* ``client-<name>`` per caller (the demo client of ``aegis up``): calls services, publishes events and commands;
* ``admin``: everything in ``AEGIS`` (the harness's own probes, tests that prepare state); ``sys`` in ``SYS``.

Each user subscribes only to its own reply inbox ``_INBOX.<user>.>`` (the SDK setting ``inbox_prefix``, which
:meth:`ClusterSecurity.sdk_settings` sets), so no user can read the replies meant for another. The dashboard is
not a NATS user: it talks to the management API only.

Everything is generated with ``trustme`` into ``<base_dir>/secrets`` (mode 0700, files 0600): ``ca.pem``, the
server's certificate and key, and per user ``<user>.pem``, ``<user>.key`` and ``<user>.password``. The node
configs hold the passwords in clear (they are 0600 too); nats-server's bcrypt form would cost a hash per connect.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from aegis.sdk import wire

__all__ = [
    "ADMIN_USER",
    "APP_ACCOUNT",
    "MANAGEMENT_USER",
    "SYSTEM_ACCOUNT",
    "SYSTEM_USER",
    "ClusterSecurity",
    "Credentials",
    "Permissions",
    "SecurityConfig",
    "client_permissions",
    "client_user",
    "management_permissions",
    "service_permissions",
    "service_user",
    "write_private",
]

APP_ACCOUNT = "AEGIS"
SYSTEM_ACCOUNT = "SYS"
ADMIN_USER = "admin"
MANAGEMENT_USER = "management"
SYSTEM_USER = "sys"
ROUTE_USER = "route"
"""The routes' own user: a node accepts a route only with TLS (a certificate of the CA) and this password."""

TLS_TIMEOUT_S = 5.0
"""Handshake bound of the servers (nats-server's default, 2 s, is tight on a loaded 2-core machine)."""

KV_BUCKETS = (
    wire.DEFINITIONS_BUCKET,
    wire.INSTANCES_BUCKET,
    wire.ELECTION_BUCKET,
    *wire.QUORUM_ELECTION_BUCKETS,
    wire.COMMANDS_BUCKET,
)
STREAMS = (
    *(f"KV_{b}" for b in KV_BUCKETS),
    wire.EVENT_STREAM,
    wire.DLQ_STREAM,
    wire.COMMAND_STREAM,
    wire.METRICS_STREAM,
    wire.LEADERSHIP_STREAM,
)
"""Every stream the SDK creates: the JetStream API of the roles is limited to these."""
REGISTRY_STREAMS = (f"KV_{wire.DEFINITIONS_BUCKET}", f"KV_{wire.INSTANCES_BUCKET}", wire.METRICS_STREAM)
"""The streams ``Registry.open`` makes sure of (management opens the registry)."""
MANAGEMENT_STREAMS = (f"KV_{wire.USERS_BUCKET}", wire.AUDIT_STREAM)
"""The management service's own: users and API keys (password and key hashes: nobody else reads them), audit."""


def service_user(name: str) -> str:
    """The NATS user of service ``name``."""
    return f"svc-{wire.check_token('service name', name)}"


def client_user(name: str) -> str:
    """The NATS user of caller ``name``."""
    return f"client-{wire.check_token('client name', name)}"


def inbox_prefix(user: str) -> str:
    """The reply-subject prefix of ``user``: the only inboxes it may subscribe to."""
    return f"_INBOX.{user}"


@dataclass(frozen=True)
class Permissions:
    """Subjects a user may publish and subscribe to (NATS ``permissions``); a deny wins over an allow.
    ``None`` allow lists mean everything (the admin)."""

    publish: tuple[str, ...] | None
    subscribe: tuple[str, ...] | None
    publish_deny: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()

    def to_config(self) -> dict[str, Any] | None:
        """The ``permissions`` object of a NATS user (None: no restriction)."""
        out: dict[str, Any] = {}
        for what, allow, deny in (
            ("publish", self.publish, self.publish_deny),
            ("subscribe", self.subscribe, self.subscribe_deny),
        ):
            block: dict[str, list[str]] = {}
            if allow is not None:
                block["allow"] = list(allow)
            if deny:
                block["deny"] = list(deny)
            if block:
                out[what] = block
        return out or None


def _js_api(streams: Iterable[str], *, create: Iterable[str] = ()) -> list[str]:
    """JetStream API subjects to read ``streams`` (info, gets, consumers) and to create/update ``create``."""
    out = ["$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST"]
    for s in streams:
        out += [
            f"$JS.API.STREAM.INFO.{s}",
            f"$JS.API.STREAM.MSG.GET.{s}",
            f"$JS.API.DIRECT.GET.{s}",
            f"$JS.API.DIRECT.GET.{s}.>",
            f"$JS.API.CONSUMER.CREATE.{s}",
            f"$JS.API.CONSUMER.CREATE.{s}.>",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{s}.>",
            f"$JS.API.CONSUMER.INFO.{s}.>",
            f"$JS.API.CONSUMER.DELETE.{s}.>",
            f"$JS.API.CONSUMER.MSG.NEXT.{s}.>",
            f"$JS.API.CONSUMER.NAMES.{s}",
            f"$JS.API.CONSUMER.LIST.{s}",
        ]
    for s in create:
        out += [f"$JS.API.STREAM.CREATE.{s}", f"$JS.API.STREAM.UPDATE.{s}"]
    # Acknowledgements and flow-control answers of the consumers above (their subjects carry the stream name,
    # but their layout differs between server versions and domains: not worth the risk of a silent stall).
    return [*out, "$JS.ACK.>", "$JS.FC.>"]


def _callers() -> list[str]:
    """What every caller publishes: calls, events and commands (JetStream publishes), replies to inboxes."""
    return [
        f"{wire.RPC_PREFIX}.>",
        f"{wire.DIRECT_PREFIX}.>",
        f"{wire.EVENT_PREFIX}.>",
        f"{wire.DLQ_PREFIX}.>",
        f"{wire.COMMAND_PREFIX}.>",
        "_INBOX.>",
    ]


def service_permissions(name: str) -> Permissions:
    """Least privilege of service ``name``: its own subjects to serve, its own KV keys to write, calls out."""
    user = service_user(name)
    return Permissions(
        publish=(
            *_callers(),
            f"{wire.METRICS_PREFIX}.{name}.>",
            f"$KV.{wire.INSTANCES_BUCKET}.{name}.>",
            f"$KV.{wire.ELECTION_BUCKET}.leader.{name}.>",
            f"$KV.{wire.ELECTION_BUCKET}.probe.{name}.>",  # the leader read-back of single_active
            *(f"$KV.{b}.leader.{name}.>" for b in wire.QUORUM_ELECTION_BUCKETS),  # election="quorum"
            f"$KV.{wire.COMMANDS_BUCKET}.{name}.>",
            f"{wire.LEADERSHIP_PREFIX}.{name}.>",
            *_js_api(STREAMS, create=STREAMS),
        ),
        subscribe=(
            f"{wire.RPC_PREFIX}.{name}.>",
            f"{wire.DIRECT_PREFIX}.{name}.>",
            f"{wire.CONTROL_PREFIX}.{name}.>",
            "$SRV.*",
            f"$SRV.*.{name}",
            f"$SRV.*.{name}.>",
            f"{inbox_prefix(user)}.>",
        ),
    )


def management_permissions() -> Permissions:
    """Least privilege of the management service: read everything, write definitions, its users and keys and
    its audit log, ask for configs; no calls. It makes sure of the streams it watches (the election buckets and
    the leadership log may not exist yet when no single-active service has run)."""
    return Permissions(
        publish=(
            f"{wire.CONTROL_PREFIX}.*.*.config",
            "$SRV.>",
            f"$KV.{wire.DEFINITIONS_BUCKET}.>",
            f"$KV.{wire.USERS_BUCKET}.>",
            wire.AUDIT_SUBJECT,
            "_INBOX.>",
            *_js_api(
                (*STREAMS, *MANAGEMENT_STREAMS),
                create=(
                    *REGISTRY_STREAMS,
                    f"KV_{wire.ELECTION_BUCKET}",
                    *(f"KV_{b}" for b in wire.QUORUM_ELECTION_BUCKETS),
                    wire.LEADERSHIP_STREAM,
                    *MANAGEMENT_STREAMS,
                ),
            ),
        ),
        subscribe=(f"{inbox_prefix(MANAGEMENT_USER)}.>",),
        publish_deny=(f"{wire.RPC_PREFIX}.>", f"{wire.DIRECT_PREFIX}.>"),
    )


def client_permissions(name: str) -> Permissions:
    """A caller: calls services (plain and sticky), publishes events and commands; serves nothing."""
    user = client_user(name)
    return Permissions(
        publish=(*_callers(), *_js_api(STREAMS, create=STREAMS)),
        subscribe=(f"{inbox_prefix(user)}.>",),
    )


ADMIN_PERMISSIONS = Permissions(publish=None, subscribe=None)


@dataclass(frozen=True)
class SecurityConfig:
    """What a secure cluster holds: the services and callers that get a user, and how TLS is set up.

    ``management``, ``admin`` and ``sys`` users always exist. ``verify_clients`` asks every client for a
    certificate of the cluster's CA (mutual TLS); ``route_tls`` encrypts and authenticates the routes.
    """

    services: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    verify_clients: bool = True
    route_tls: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "services", tuple(self.services))
        object.__setattr__(self, "clients", tuple(self.clients))
        for n in self.services:
            service_user(n)
        for n in self.clients:
            client_user(n)


class Credentials(NamedTuple):
    """Where one user's secrets are: ``user, password_file = cluster.credentials("management")``; the client
    certificate and key lie next to the password file (all 0600)."""

    user: str
    password_file: Path

    @property
    def cert_file(self) -> Path:
        """PEM client certificate of the user (signed by the cluster's CA)."""
        return self.password_file.with_suffix(".pem")

    @property
    def key_file(self) -> Path:
        """PEM private key of :attr:`cert_file`."""
        return self.password_file.with_suffix(".key")


@dataclass
class _User:
    name: str
    account: str
    permissions: Permissions
    password: str = field(repr=False, default="")


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by the owner only (created 0600, never world-readable meanwhile)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


class ClusterSecurity:
    """The CA, certificates, users and passwords of one secure cluster, and the config text they make.

    Built by :class:`LocalCluster`; tests and tools use :meth:`credentials` and :meth:`sdk_settings`.
    """

    def __init__(self, config: SecurityConfig) -> None:
        self.config = config
        self.directory: Path | None = None
        self._ca: Any = None  # the trustme CA while this process holds its key (it is never written out)
        self._route_password = ""
        users = [
            _User(ADMIN_USER, APP_ACCOUNT, ADMIN_PERMISSIONS),
            _User(MANAGEMENT_USER, APP_ACCOUNT, management_permissions()),
            *(_User(service_user(n), APP_ACCOUNT, service_permissions(n)) for n in config.services),
            *(_User(client_user(n), APP_ACCOUNT, client_permissions(n)) for n in config.clients),
            _User(SYSTEM_USER, SYSTEM_ACCOUNT, ADMIN_PERMISSIONS),
        ]
        self._users = {u.name: u for u in users}
        if len(self._users) != len(users):
            raise ValueError("two roles map to the same NATS user")

    # ------------------------------------------------------------------ files

    @property
    def ca_file(self) -> Path:
        """PEM of the cluster's CA: what a client needs as ``tls_ca``."""
        return self._dir() / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self._dir() / "server.pem"

    @property
    def server_key(self) -> Path:
        return self._dir() / "server.key"

    @property
    def users(self) -> list[str]:
        """Every NATS user of the cluster."""
        return list(self._users)

    def _dir(self) -> Path:
        if self.directory is None:
            raise RuntimeError(
                "the cluster's secrets are not generated yet (LocalCluster.base_dir creates them)"
            )
        return self.directory

    def generate(self, directory: Path) -> None:
        """Create the CA, the server certificate (127.0.0.1, localhost), a certificate and a password per user
        in ``directory`` (0700; files 0600). Material already there for every user is reused, so a cluster
        started again on the same base dir keeps its identities; otherwise all of it is made anew."""
        try:
            import trustme  # only a secure cluster needs it
        except ImportError:
            raise ImportError(
                "a secure cluster makes its certificates with trustme: pip install trustme"
            ) from None

        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        self.directory = directory
        route_file = directory / f"{ROUTE_USER}.password"
        wanted = [self.ca_file, self.server_cert, self.server_key, route_file]
        for name in self._users:
            c = self.credentials(name)
            wanted += [c.password_file, c.cert_file, c.key_file]
        if all(p.is_file() for p in wanted):
            for user in self._users.values():
                user.password = self.credentials(user.name).password_file.read_text().strip()
            self._route_password = route_file.read_text().strip()
            return
        self._ca = ca = trustme.CA(organization_name="Aegis local cluster")
        server = ca.issue_cert("127.0.0.1", "localhost", common_name="aegis-nats-server")
        write_private(self.server_cert, b"".join(b.bytes() for b in server.cert_chain_pems))
        write_private(self.server_key, server.private_key_pem.bytes())
        write_private(self.ca_file, ca.cert_pem.bytes())
        self._route_password = secrets.token_urlsafe(24)
        write_private(route_file, (self._route_password + "\n").encode())
        for user in self._users.values():
            self._issue(user)

    def _issue(self, user: _User) -> None:
        creds = self.credentials(user.name)
        user.password = secrets.token_urlsafe(24)
        write_private(creds.password_file, (user.password + "\n").encode())
        cert = self._ca.issue_cert(f"{user.name}.users.aegis.local", common_name=user.name)
        write_private(creds.cert_file, b"".join(b.bytes() for b in cert.cert_chain_pems))
        write_private(creds.key_file, cert.private_key_pem.bytes())

    def add_users(self, services: Iterable[str] = (), clients: Iterable[str] = ()) -> list[str]:
        """Add a user per new service and client name (existing ones are kept); return the users added.

        Needs the CA made by :meth:`generate` in this process (its key is kept in memory only)."""
        new = [_User(service_user(n), APP_ACCOUNT, service_permissions(n)) for n in services]
        new += [_User(client_user(n), APP_ACCOUNT, client_permissions(n)) for n in clients]
        new = [u for u in new if u.name not in self._users]
        if new and self._ca is None:
            raise RuntimeError("users can be added only by the process that generated the cluster's CA")
        for user in new:
            self._users[user.name] = user
            self._issue(user)
        return [u.name for u in new]

    # ------------------------------------------------------------------ identities

    def credentials(self, user: str) -> Credentials:
        """The files of ``user`` (``management``, ``svc-quotes``, ``admin``...); KeyError for an unknown user."""
        if user not in self._users:
            raise KeyError(f"no NATS user {user!r} in this cluster (users: {', '.join(self._users)})")
        d = self._dir()
        return Credentials(user, d / f"{user}.password")

    def sdk_settings(self, user: str, servers: list[str]) -> dict[str, Any]:
        """Keyword arguments of :func:`aegis.sdk.config.load_settings` that connect as ``user``."""
        c = self.credentials(user)
        return {
            "servers": list(servers),
            "user": c.user,
            "password_file": c.password_file,
            "tls_ca": self.ca_file,
            "tls_cert": c.cert_file,
            "tls_key": c.key_file,
            "inbox_prefix": inbox_prefix(c.user),
        }

    def sdk_env(self, user: str, servers: list[str]) -> dict[str, str]:
        """The same as ``AEGIS_*`` environment variables, for a child process that calls ``load_settings()``."""
        out = {}
        for key, value in self.sdk_settings(user, servers).items():
            out[f"AEGIS_{key.upper()}"] = ",".join(value) if isinstance(value, list) else str(value)
        return out

    def nats_connect_options(self, user: str) -> dict[str, Any]:
        """Keyword arguments of raw ``nats.connect`` as ``user`` (TLS context, user, password, inbox prefix)."""
        c = self.credentials(user)
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(c.cert_file), str(c.key_file))
        return {
            "user": c.user,
            "password": self._users[user].password,
            "tls": ctx,
            "inbox_prefix": inbox_prefix(c.user),
        }

    # ------------------------------------------------------------------ server config

    def client_config(self) -> str:
        """Top-level config of a node: client TLS, accounts with their users, the system account."""
        q = json.dumps
        tls = self._tls_block(verify=self.config.verify_clients)
        accounts: dict[str, list[str]] = {APP_ACCOUNT: [], SYSTEM_ACCOUNT: []}
        for u in self._users.values():
            entry: dict[str, Any] = {"user": u.name, "password": u.password}
            perms = u.permissions.to_config()
            if perms is not None:
                entry["permissions"] = perms
            accounts[u.account].append("      " + q(entry))
        return "\n".join(
            [
                f"tls {{{tls}}}",
                "accounts {",
                f"  {APP_ACCOUNT}: {{",
                "    jetstream: enabled",
                "    users: [",
                ",\n".join(accounts[APP_ACCOUNT]),
                "    ]",
                "  }",
                f"  {SYSTEM_ACCOUNT}: {{",
                "    users: [",
                ",\n".join(accounts[SYSTEM_ACCOUNT]),
                "    ]",
                "  }",
                "}",
                f"system_account: {SYSTEM_ACCOUNT}",
            ]
        )

    def route_config(self) -> str:
        """The ``tls`` and ``authorization`` blocks inside a node's ``cluster { }``."""
        q = json.dumps
        auth = f"  authorization {{ user: {q(ROUTE_USER)}, password: {q(self._route_password)} }}"
        if not self.config.route_tls:
            return auth
        return f"  tls {{{self._tls_block(verify=True)}}}\n{auth}"

    def route_userinfo(self) -> str:
        """``user:password@`` of the route URLs (the passwords are URL-safe)."""
        return f"{ROUTE_USER}:{self._route_password}@"

    def _tls_block(self, *, verify: bool) -> str:
        q = json.dumps
        items: Mapping[str, str] = {
            "cert_file": q(str(self.server_cert)),
            "key_file": q(str(self.server_key)),
            "ca_file": q(str(self.ca_file)),
            "verify": "true" if verify else "false",
            "timeout": f"{TLS_TIMEOUT_S:g}",
        }
        return " " + ", ".join(f"{k}: {v}" for k, v in items.items()) + " "
