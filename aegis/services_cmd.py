"""``aegis services ...``: service definitions through the management API, for operators without the dashboard.

Authenticates with an API key (``--api-key`` / ``AEGIS_API_KEY``) or a user and password (``--user``,
``AEGIS_MGMT_PASSWORD``) exchanged for a token. Updates read the definition first and send its ETag, so a change
made meanwhile by someone else is reported (412), never overwritten.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from aegis.sdk.schema import DefinitionFields

_out = Console()


class ApiClient:
    """A small client of the management API; every failure ends the command with the API's own words."""

    def __init__(
        self, url: str, api_key: str | None, user: str | None, password: str | None, timeout: float
    ) -> None:
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)
        if api_key:
            self.http.headers["X-API-Key"] = api_key
        elif user and password:
            r = self._send("POST", "/api/token", data={"username": user, "password": password})
            self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        else:
            _fail("credentials needed: --api-key (or AEGIS_API_KEY), or --user with AEGIS_MGMT_PASSWORD", 2)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            r = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            _fail(f"cannot reach the management API at {self.http.base_url}: {exc}", 3)
        if r.status_code >= 400:
            try:
                body = r.json()
                detail = body.get("detail") if isinstance(body, dict) else body
            except ValueError:
                detail = r.text
            if r.status_code == 412 and isinstance(body, dict):
                detail = f"{detail} (current revision {body.get('current_revision')})"
            _fail(f"{method} {path}: {r.status_code} {detail}", 1)
        return r

    def get(self, path: str) -> httpx.Response:
        return self._send("GET", path)

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._send(method, path, **kwargs)


def _fail(message: str, code: int) -> None:
    typer.echo(f"aegis services: {message}", err=True)
    raise typer.Exit(code)


def show(items: list[dict[str, Any]], as_json: bool) -> None:
    """Print definitions as a table (or JSON)."""
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    table = Table("name", "revision", "owner", "version", "single-active", "description")
    for item in items:
        d = item["definition"]
        table.add_row(
            d["name"],
            str(item["revision"]),
            d["owner"],
            d["version"],
            "yes" if d["single_active"] else "no",
            d["description"][:60],
        )
    _out.print(table)


def list_command(client: ApiClient, as_json: bool) -> None:
    show(client.get("/api/services").json(), as_json)


def get_command(client: ApiClient, name: str, as_json: bool) -> None:
    show([client.get(f"/api/services/{name}").json()], as_json)


def create_command(client: ApiClient, name: str, fields: dict[str, Any], as_json: bool) -> None:
    body = {"name": name, **{k: v for k, v in fields.items() if v is not None}}
    show([client.send("POST", "/api/services", json=body).json()], as_json)


def update_command(client: ApiClient, name: str, fields: dict[str, Any], as_json: bool) -> None:
    current = client.get(f"/api/services/{name}")
    definition = current.json()["definition"]
    body = {k: definition[k] for k in DefinitionFields.model_fields}  # what PUT takes: every editable field
    body.update({k: v for k, v in fields.items() if v is not None})
    r = client.send("PUT", f"/api/services/{name}", json=body, headers={"If-Match": current.headers["ETag"]})
    show([r.json()], as_json)


def delete_command(client: ApiClient, name: str) -> None:
    current = client.get(f"/api/services/{name}")
    client.send("DELETE", f"/api/services/{name}", headers={"If-Match": current.headers["ETag"]})
    typer.echo(f"deleted {name} (was revision {current.json()['revision']})")


def history_command(client: ApiClient, name: str, as_json: bool) -> None:
    entries = client.get(f"/api/services/{name}/history").json()
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    table = Table("revision", "operation", "time", "owner", "version")
    for e in entries:
        v = e.get("value") or {}
        table.add_row(
            str(e["revision"]), e["operation"], str(e["time"]), v.get("owner", ""), v.get("version", "")
        )
    _out.print(table)
