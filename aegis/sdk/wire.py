"""Subjects and headers: the one place that names what Aegis puts on the wire."""

from __future__ import annotations

import re

from .errors import BadRequest

# NATS micro (ADR-32) error headers.
ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"

# Remaining time budget of a call in milliseconds, as seen by the caller when it sent the request.
# A budget rather than an absolute deadline, so clocks of caller and handler need not agree.
TIMEOUT_HEADER = "Aegis-Timeout-Ms"
# Idempotency / correlation key of a call or command.
CALL_ID_HEADER = "Aegis-Call-Id"
# Epoch of the single-active instance that produced a reply: for an exclusive call, the epoch the call was
# admitted under (never the instance's newer knowledge); for a NotActive answer, the newest epoch it knows.
EPOCH_HEADER = "Aegis-Epoch"
# Newest epoch the instance knew when it withheld an exclusive call's outcome (LeaseLost replies).
KNOWN_EPOCH_HEADER = "Aegis-Known-Epoch"
# Instance that produced a reply.
INSTANCE_HEADER = "Aegis-Instance"

# JetStream de-duplication header.
MSG_ID_HEADER = "Nats-Msg-Id"

# KV headers written by hand (aegis/sdk/registry.py): compare-and-set, and what a removal marker is.
EXPECTED_LAST_SUBJECT_SEQ_HEADER = "Nats-Expected-Last-Subject-Sequence"
KV_OPERATION_HEADER = "KV-Operation"
ROLLUP_HEADER = "Nats-Rollup"
# Set by the server on the marker it leaves when a key's TTL expires (value "MaxAge").
MARKER_REASON_HEADER = "Nats-Marker-Reason"

RPC_PREFIX = "aegis.rpc"
DIRECT_PREFIX = "aegis.direct"
EVENT_PREFIX = "aegis.evt"
DLQ_PREFIX = "aegis.dlq"
COMMAND_PREFIX = "aegis.cmd"
# Per-instance metrics snapshots: aegis.metrics.<service>.<instance_id> in stream AEGIS_METRICS.
METRICS_PREFIX = "aegis.metrics"
# Per-instance control requests (effective configuration): aegis.ctl.<service>.<instance_id>.<what>.
CONTROL_PREFIX = "aegis.ctl"
# Leadership changes of single-active groups: aegis.leadership.<service>.<group> in stream AEGIS_LEADERSHIP
# (aegis/sdk/leadership.py).
LEADERSHIP_PREFIX = "aegis.leadership"

EVENT_STREAM = "AEGIS_EVENTS"
DLQ_STREAM = "AEGIS_DLQ"
COMMAND_STREAM = "AEGIS_COMMANDS"
METRICS_STREAM = "AEGIS_METRICS"
LEADERSHIP_STREAM = "AEGIS_LEADERSHIP"

# Registry buckets (aegis/sdk/registry.py): which services may run, and which instances run.
DEFINITIONS_BUCKET = "aegis_definitions"
INSTANCES_BUCKET = "aegis_instances"
# Single-active election keys leader.<service>.<group> (aegis/sdk/single_active.py).
ELECTION_BUCKET = "aegis_election"
# The quorum lease's three election buckets (docs/quorum-lease.md): same keys, no TTL, no delete markers.
QUORUM_ELECTION_BUCKETS = ("aegis_election_q0", "aegis_election_q1", "aegis_election_q2")
# Command records <service>.<command>.<call key> (aegis/sdk/commands.py): which worker holds a call id, then its
# result; what a record is travels in these headers.
COMMANDS_BUCKET = "aegis_commands"
COMMAND_STATE_HEADER = "Aegis-Command-State"
COMMAND_CLAIM_HEADER = "Aegis-Command-Claim"
COMMAND_TOKEN_HEADER = "Aegis-Command-Token"

# One NATS subject token: no dots, wildcards or whitespace. Also a valid KV key token.
_TOKEN = re.compile(r"^[-_=a-zA-Z0-9]+$")


def check_token(kind: str, value: str) -> str:
    """Return ``value`` if it is a single valid subject token, else raise BadRequest (a ValueError)."""
    if not isinstance(value, str) or not _TOKEN.match(value):
        raise BadRequest(
            f"invalid {kind} {value!r}: use letters, digits, '-', '_' or '=' (no dots, spaces or wildcards)"
        )
    return value


def rpc_subject(service: str, method: str) -> str:
    """Subject shared by all instances of ``service`` for ``method`` (queue group = service)."""
    return f"{RPC_PREFIX}.{service}.{method}"


def instance_rpc_subject(service: str, instance_id: str, method: str) -> str:
    """Subject that reaches one instance directly (used by discovery and sticky routing)."""
    return f"{DIRECT_PREFIX}.{service}.{instance_id}.{method}"


def metrics_subject(service: str, instance_id: str) -> str:
    return f"{METRICS_PREFIX}.{service}.{instance_id}"


def leadership_subject(service: str, group: str) -> str:
    """Subject of the leadership changes of one single-active group."""
    return f"{LEADERSHIP_PREFIX}.{service}.{group}"


def control_subject(service: str, instance_id: str, what: str) -> str:
    return f"{CONTROL_PREFIX}.{service}.{instance_id}.{what}"


def command_subject(service: str, command: str) -> str:
    return f"{COMMAND_PREFIX}.{service}.{command}"


def dlq_subject(subject: str) -> str:
    """Dead-letter subject for an event that was published on ``subject``."""
    return f"{DLQ_PREFIX}.{subject}"


# --- Events and commands (aegis/sdk/events.py, aegis/sdk/commands.py) ---------------------------------------------

# Inbox (core NATS subject) where a command's progress and result go; carried on the command message.
REPLY_TO_HEADER = "Aegis-Reply-To"
# What a message on a command's reply inbox is: "progress" or "result".
REPLY_KIND_HEADER = "Aegis-Reply-Kind"
# Per-message TTL (seconds) of a JetStream message; the stream needs allow_msg_ttl.
MSG_TTL_HEADER = "Nats-TTL"

# Headers of a dead-lettered event (besides ERROR_HEADER / ERROR_CODE_HEADER with the last error).
DLQ_SUBJECT_HEADER = "Aegis-Dlq-Subject"
DLQ_EVENT_ID_HEADER = "Aegis-Dlq-Event-Id"
DLQ_DELIVERIES_HEADER = "Aegis-Dlq-Deliveries"
DLQ_STREAM_SEQ_HEADER = "Aegis-Dlq-Stream-Seq"
DLQ_CONSUMER_HEADER = "Aegis-Dlq-Consumer"

_WILDCARD_TOKENS = ("*", ">")


def check_topic(value: str, *, wildcards: bool = False) -> str:
    """Return ``value`` if it is a valid event topic (dot-separated tokens), else raise BadRequest.

    With ``wildcards`` a token may be ``*`` (one token) and the last token may be ``>`` (the rest).
    """
    if not isinstance(value, str) or not value:
        raise BadRequest(f"invalid topic {value!r}: expected dot-separated tokens like 'orders.created'")
    tokens = value.split(".")
    for i, tok in enumerate(tokens):
        if wildcards and (tok == "*" or (tok == ">" and i == len(tokens) - 1)):
            continue
        if not _TOKEN.match(tok):
            what = "wildcards are not allowed here" if tok in _WILDCARD_TOKENS else "bad token"
            raise BadRequest(
                f"invalid topic {value!r}: {what} ({tok!r}); tokens use letters, digits, '-', '_' or '='"
                + (", '*' or a final '>'" if wildcards else "")
            )
    return value


def event_subject(topic: str) -> str:
    """Subject of the events of ``topic`` (``orders.created`` -> ``aegis.evt.orders.created``)."""
    return f"{EVENT_PREFIX}.{topic}"


# --- Management service security (aegis/management/) ----------------------------------------------------------------

# Users (user.<name>) and API keys (key.<id>) of the management service: a replicated KV bucket with a few revisions.
USERS_BUCKET = "aegis_users"
# The append-only audit log: one subject in a stream that refuses message deletes and purges.
AUDIT_STREAM = "AEGIS_AUDIT"
AUDIT_SUBJECT = "aegis.audit"
# HTTP headers of the management API: a machine's API key, and the id that ties a request to its audit entries.
API_KEY_HEADER = "X-API-Key"
REQUEST_ID_HEADER = "X-Request-ID"
