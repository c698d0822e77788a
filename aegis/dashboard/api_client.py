"""The management API as the dashboard calls it: one shared HTTP connection pool, typed answers, clear errors.

Every call takes the credentials to send (a person's bearer token, or the feed's API key), so the client itself
holds none and one instance serves every session of the process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from aegis.management.api_models import ClusterView, DefinitionOut, GroupView, InstanceView
from aegis.sdk.schema import (
    AuditEntry,
    AuditPage,
    EffectiveConfig,
    LeadershipChange,
    MetricsSnapshot,
    TokenResponse,
)


class ApiUnreachable(Exception):
    """The management API did not answer (refused, timed out, or a 5xx from a proxy in front of it)."""


class ApiError(Exception):
    """The management API answered with an error; ``detail`` is its own words, shown to the operator as is."""

    def __init__(self, status: int, detail: str, current_revision: int | None = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.current_revision = current_revision


@dataclass(frozen=True)
class Credentials:
    """What to authenticate one call with: a bearer token (a person) or an API key (the feed)."""

    token: str | None = None
    api_key: str | None = None

    def headers(self) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.api_key:
            return {"X-API-Key": self.api_key}
        return {}


def _detail(response: httpx.Response) -> tuple[str, int | None]:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase, None
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI validation errors: name the field and say what is wrong
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', [])[1:]) or 'body'}: {e.get('msg', '')}" for e in detail
        )
    current = body.get("current_revision") if isinstance(body, dict) else None
    return str(detail), current


class ManagementClient:
    """Async calls to the management API at ``base_url``; close it with :meth:`aclose`.

    Example::

        client = ManagementClient("http://127.0.0.1:8080")
        token = await client.login("alice", "a long password")
        views = await client.instances(Credentials(token=token.access_token))
    """

    def __init__(self, base_url: str, timeout: float = 3.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        creds: Credentials | None,
        *,
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> httpx.Response:
        h = {**(creds.headers() if creds else {}), **(headers or {})}
        try:
            response = await self._http.request(method, path, headers=h, **kw)
        except httpx.HTTPError as exc:
            raise ApiUnreachable(
                f"management API at {self.base_url} unreachable: {type(exc).__name__}"
            ) from exc
        if response.status_code in (502, 503):
            raise ApiUnreachable(f"management API at {self.base_url} answered {response.status_code}")
        if response.status_code >= 400:
            detail, current = _detail(response)
            raise ApiError(response.status_code, detail, current)
        return response

    async def login(self, username: str, password: str) -> TokenResponse:
        """OAuth2 password flow: a token with the scopes of the user's role."""
        r = await self._call("POST", "/api/token", None, data={"username": username, "password": password})
        return TokenResponse.model_validate(r.json())

    async def instances(self, creds: Credentials) -> list[InstanceView]:
        r = await self._call("GET", "/api/instances", creds)
        return [InstanceView.model_validate(v) for v in r.json()]

    async def groups(self, creds: Credentials) -> list[GroupView]:
        r = await self._call("GET", "/api/groups", creds)
        return [GroupView.model_validate(v) for v in r.json()]

    async def cluster(self, creds: Credentials) -> ClusterView:
        r = await self._call("GET", "/api/cluster", creds)
        return ClusterView.model_validate(r.json())

    async def services(self, creds: Credentials) -> list[DefinitionOut]:
        r = await self._call("GET", "/api/services", creds)
        return [DefinitionOut.model_validate(v) for v in r.json()]

    async def service(self, creds: Credentials, name: str) -> DefinitionOut:
        r = await self._call("GET", f"/api/services/{name}", creds)
        return DefinitionOut.model_validate(r.json())

    async def create_service(self, creds: Credentials, body: dict[str, Any]) -> DefinitionOut:
        r = await self._call("POST", "/api/services", creds, json=body)
        return DefinitionOut.model_validate(r.json())

    async def replace_service(
        self, creds: Credentials, name: str, body: dict[str, Any], revision: int
    ) -> DefinitionOut:
        """``PUT`` with ``If-Match``: a 412 (:class:`ApiError` with ``current_revision``) when someone was first."""
        r = await self._call(
            "PUT", f"/api/services/{name}", creds, json=body, headers={"If-Match": f'"{revision}"'}
        )
        return DefinitionOut.model_validate(r.json())

    async def delete_service(self, creds: Credentials, name: str, revision: int) -> None:
        await self._call("DELETE", f"/api/services/{name}", creds, headers={"If-Match": f'"{revision}"'})

    async def failovers(self, creds: Credentials, service: str, group: str) -> list[LeadershipChange]:
        r = await self._call("GET", f"/api/groups/{service}/{group}/failovers", creds)
        return [LeadershipChange.model_validate(v) for v in r.json()]

    async def instance(self, creds: Credentials, service: str, instance_id: str) -> InstanceView:
        r = await self._call("GET", f"/api/instances/{service}/{instance_id}", creds)
        return InstanceView.model_validate(r.json())

    async def metrics_history(
        self, creds: Credentials, service: str, instance_id: str, since: float, until: float, step: float
    ) -> list[MetricsSnapshot]:
        """One snapshot per ``step`` seconds (the first page: at most 1000 points)."""
        r = await self._call(
            "GET",
            f"/api/instances/{service}/{instance_id}/metrics",
            creds,
            params={"since": since, "until": until, "step": step, "limit": 1000},
        )
        return [MetricsSnapshot.model_validate(p) for p in r.json().get("points", [])]

    async def config(self, creds: Credentials, service: str, instance_id: str) -> EffectiveConfig:
        r = await self._call("GET", f"/api/instances/{service}/{instance_id}/config", creds)
        return EffectiveConfig.model_validate(r.json())

    async def audit(self, creds: Credentials, since: float, max_pages: int = 10) -> list[AuditEntry]:
        """Audit entries at or after ``since`` (UNIX s), oldest first, following the cursor up to ``max_pages``."""
        entries: list[AuditEntry] = []
        params: dict[str, Any] = {"since": since, "limit": 100}
        for _ in range(max_pages):
            r = await self._call("GET", "/api/audit", creds, params=params)
            page = AuditPage.model_validate(r.json())
            entries += page.entries
            if page.next_cursor is None:
                break
            params = {"cursor": page.next_cursor, "limit": 100}
        return entries
