"""Service management: the definitions list and the create, edit and delete forms, over ``/api/services``.

The form is read-only until Edit. A save sends the revision the form was loaded at as ``If-Match``: when someone
else saved first the API answers 412 and the page shows that conflict with the current version, never
overwriting it. Delete asks for confirmation first. A viewer (no ``services:write``) gets no edit controls at all.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd
import panel as pn

from aegis.management.api_models import DefinitionOut

from .api_client import ApiError, ApiUnreachable, Credentials, ManagementClient
from .frame import DashboardContext, clock, html_pane, page
from .sessions import UserSession

LIST_COLUMNS = [
    "name",
    "owner",
    "version",
    "single active",
    "max error rate",
    "max p99 ms",
    "revision",
    "updated",
]


def definition_rows(defs: list[DefinitionOut]) -> pd.DataFrame:
    rows = [
        {
            "name": d.definition.name,
            "owner": d.definition.owner,
            "version": d.definition.version,
            "single active": "yes" if d.definition.single_active else "no",
            "max error rate": "" if d.definition.max_error_rate is None else d.definition.max_error_rate,
            "max p99 ms": "" if d.definition.max_p99_ms is None else d.definition.max_p99_ms,
            "revision": d.revision,
            "updated": clock(d.definition.updated_at),
        }
        for d in sorted(defs, key=lambda d: d.definition.name)
    ]
    return pd.DataFrame(rows, columns=LIST_COLUMNS)


def _message(kind: str, text: str) -> str:
    colours = {"error": ("#fdecea", "#7a1410"), "ok": ("#e7f4e8", "#14521a"), "warn": ("#fff4d6", "#5a3a00")}
    bg, fg = colours[kind]
    role = "alert" if kind != "ok" else "status"
    return (
        f'<div role="{role}" style="background:{bg};color:{fg};border:1px solid {fg};padding:.5rem;'
        f'border-radius:4px;font-family:system-ui,sans-serif">{text}</div>'
    )


def _describe(d: DefinitionOut) -> str:
    x = d.definition
    return (
        f"revision {d.revision}: owner {html.escape(x.owner) or '-'}, version {html.escape(x.version)}, "
        f"single active {'yes' if x.single_active else 'no'}, max error rate {x.max_error_rate}, "
        f"max p99 {x.max_p99_ms} ms, description “{html.escape(x.description)}”"
    )


class DefinitionForm:
    """One definition's fields; read-only until :meth:`edit`. Holds the revision it was loaded at."""

    def __init__(self) -> None:
        self.name = pn.widgets.TextInput(name="Name", disabled=True)
        self.owner = pn.widgets.TextInput(name="Owner", disabled=True)
        self.version = pn.widgets.TextInput(name="Version", value="0.0.0", disabled=True)
        self.description = pn.widgets.TextAreaInput(name="Description", disabled=True, height=80)
        # a Select, not a Checkbox: Panel's checkbox input has no accessible label (axe "label", critical)
        self.single_active = pn.widgets.Select(
            name="Single active", options=["no", "yes"], value="no", disabled=True
        )
        self.max_error_rate = pn.widgets.TextInput(name="Max error rate (0-1, empty: default)", disabled=True)
        self.max_p99_ms = pn.widgets.TextInput(name="Max p99 ms (empty: default)", disabled=True)
        self.revision: int | None = None
        self.fields = [
            self.owner,
            self.version,
            self.description,
            self.single_active,
            self.max_error_rate,
            self.max_p99_ms,
        ]

    def load(self, d: DefinitionOut | None) -> None:
        x = d.definition if d else None
        self.revision = d.revision if d else None
        self.name.value = x.name if x else ""
        self.owner.value = x.owner if x else ""
        self.version.value = x.version if x else "0.0.0"
        self.description.value = x.description if x else ""
        self.single_active.value = "yes" if x and x.single_active else "no"
        self.max_error_rate.value = "" if not x or x.max_error_rate is None else str(x.max_error_rate)
        self.max_p99_ms.value = "" if not x or x.max_p99_ms is None else str(x.max_p99_ms)

    def set_editable(self, editable: bool, name_too: bool = False) -> None:
        for w in self.fields:
            w.disabled = not editable
        self.name.disabled = not name_too

    def body(self) -> dict[str, Any]:
        """The request body; numbers the API validates (its 422 names the field), empty means the default."""

        def number(text: str) -> Any:
            text = text.strip()
            if not text:
                return None
            try:
                return float(text)
            except ValueError:
                return text  # the API says what is wrong with it

        return {
            "owner": self.owner.value,
            "version": self.version.value,
            "description": self.description.value,
            "single_active": self.single_active.value == "yes",
            "max_error_rate": number(self.max_error_rate.value),
            "max_p99_ms": number(self.max_p99_ms.value),
        }

    def view(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.Row(self.name, self.owner, self.version),
            self.description,
            pn.Row(self.max_error_rate, self.max_p99_ms, self.single_active),
        )


def build_services(ctx: DashboardContext, session: UserSession, creds: Credentials):  # type: ignore[no-untyped-def]
    client: ManagementClient = ctx.client
    can_write = session.can_write_services
    table = pn.widgets.Tabulator(
        pd.DataFrame(columns=LIST_COLUMNS),
        disabled=True,
        show_index=False,
        selectable=1,
        sizing_mode="stretch_width",
        height=260,
        layout="fit_data_fill",
        name="Definitions",
    )
    form = DefinitionForm()
    message = html_pane("")
    heading = html_pane("<h2>Select a definition</h2>")
    mode = {"value": "view"}  # view | edit | create | confirm-delete
    buttons: dict[str, pn.widgets.Button] = {}
    if can_write:
        buttons = {
            "new": pn.widgets.Button(name="New definition", button_type="primary"),
            "edit": pn.widgets.Button(name="Edit", disabled=True),
            "save": pn.widgets.Button(name="Save", button_type="primary", visible=False),
            "cancel": pn.widgets.Button(name="Cancel", visible=False),
            "delete": pn.widgets.Button(name="Delete", button_type="danger", disabled=True),
            "confirm": pn.widgets.Button(name="Yes, delete it", button_type="danger", visible=False),
            "reload": pn.widgets.Button(name="Load the current version", visible=False),
        }
    refresh = pn.widgets.Button(name="Refresh list")

    def set_mode(m: str) -> None:
        mode["value"] = m
        if not can_write:
            return
        selected = form.revision is not None
        buttons["new"].visible = m == "view"
        buttons["edit"].visible = m == "view"
        buttons["edit"].disabled = not selected
        buttons["delete"].visible = m == "view"
        buttons["delete"].disabled = not selected
        buttons["save"].visible = m in ("edit", "create")
        buttons["cancel"].visible = m != "view"
        buttons["confirm"].visible = m == "confirm-delete"
        buttons["reload"].visible = False
        form.set_editable(m in ("edit", "create"), name_too=m == "create")

    state: dict[str, list[DefinitionOut]] = {"defs": []}

    async def load_list() -> None:
        try:
            state["defs"] = await client.services(creds)
        except (ApiError, ApiUnreachable) as exc:
            message.object = _message("error", f"Could not read the definitions: {html.escape(str(exc))}")
            return
        table.value = definition_rows(state["defs"])

    async def select(name: str) -> None:
        try:
            d = await client.service(creds, name)
        except (ApiError, ApiUnreachable) as exc:
            message.object = _message("error", html.escape(str(exc)))
            return
        form.load(d)
        heading.object = f"<h2>{html.escape(name)} <small>(revision {d.revision})</small></h2>"
        message.object = ""
        set_mode("view")

    async def on_select(event: Any) -> None:
        if event.new and mode["value"] == "view":
            rows = table.value
            if event.new[0] < len(rows):
                await select(rows.iloc[event.new[0]]["name"])

    table.param.watch(on_select, "selection")

    async def on_new(_e: Any) -> None:
        form.load(None)
        heading.object = "<h2>New definition</h2>"
        message.object = ""
        set_mode("create")

    async def on_edit(_e: Any) -> None:
        message.object = ""
        set_mode("edit")

    async def on_cancel(_e: Any) -> None:
        message.object = ""
        if form.name.value and mode["value"] != "create":
            await select(form.name.value)
        else:
            form.load(None)
            set_mode("view")

    async def on_save(_e: Any) -> None:
        body = form.body()
        try:
            if mode["value"] == "create":
                saved = await client.create_service(creds, {"name": form.name.value, **body})
                verb = "Created"
            else:
                assert form.revision is not None
                saved = await client.replace_service(creds, form.name.value, body, form.revision)
                verb = "Saved"
        except ApiUnreachable as exc:
            message.object = _message("error", f"Not saved: {html.escape(str(exc))}")
            return
        except ApiError as exc:
            if exc.status == 412:
                await show_conflict(exc)
            elif exc.status == 409:
                message.object = _message("error", f"Not created: {html.escape(exc.detail)}")
            else:
                message.object = _message("error", f"Not saved ({exc.status}): {html.escape(exc.detail)}")
            return
        form.load(saved)
        heading.object = (
            f"<h2>{html.escape(saved.definition.name)} <small>(revision {saved.revision})</small></h2>"
        )
        message.object = _message(
            "ok", f"{verb} {html.escape(saved.definition.name)}: revision {saved.revision}."
        )
        set_mode("view")
        await load_list()

    async def show_conflict(exc: ApiError) -> None:
        """Someone saved first: keep the person's edits in the form, show what is stored now."""
        try:
            current = await client.service(creds, form.name.value)
            now = _describe(current)
        except (ApiError, ApiUnreachable) as err:
            now = f"(could not read it: {html.escape(str(err))})"
        message.object = _message(
            "warn",
            f"<b>Conflict: not saved.</b> {html.escape(form.name.value)} was changed by someone else since you "
            f"opened it (you edited revision {form.revision}; it is now at revision "
            f"{exc.current_revision}). Current version: {now}. Your edits are still in the form; load the "
            "current version to start again from it.",
        )
        buttons["reload"].visible = True

    async def on_reload(_e: Any) -> None:
        await select(form.name.value)

    async def on_delete(_e: Any) -> None:
        message.object = _message(
            "warn",
            f"Delete the definition <b>{html.escape(form.name.value)}</b> (revision {form.revision})? Running "
            "instances keep running; the definition and its thresholds go.",
        )
        set_mode("confirm-delete")

    async def on_confirm(_e: Any) -> None:
        name = form.name.value
        try:
            assert form.revision is not None
            await client.delete_service(creds, name, form.revision)
        except ApiError as exc:
            if exc.status == 412:
                await show_conflict(exc)
            else:
                message.object = _message("error", f"Not deleted ({exc.status}): {html.escape(exc.detail)}")
            set_mode("view")
            return
        except ApiUnreachable as exc:
            message.object = _message("error", f"Not deleted: {html.escape(str(exc))}")
            return
        form.load(None)
        heading.object = "<h2>Select a definition</h2>"
        set_mode("view")
        message.object = _message("ok", f"Deleted {html.escape(name)}.")
        await load_list()

    async def on_refresh(_e: Any) -> None:
        await load_list()

    refresh.on_click(on_refresh)
    controls: list[Any] = [refresh]
    if can_write:
        for key, handler in (
            ("new", on_new),
            ("edit", on_edit),
            ("save", on_save),
            ("cancel", on_cancel),
            ("delete", on_delete),
            ("confirm", on_confirm),
            ("reload", on_reload),
        ):
            buttons[key].on_click(handler)
        controls = [buttons["new"], refresh]
        set_mode("view")
    note = "" if can_write else '<p class="aegis-muted">Read-only: your role cannot change definitions.</p>'
    body = pn.Column(
        html_pane(f"<h2>Service definitions</h2>{note}"),
        pn.Row(*controls),
        table,
        heading,
        message,
        form.view(),
        pn.Row(*[buttons[k] for k in ("edit", "save", "cancel", "delete", "confirm", "reload")])
        if can_write
        else pn.Row(),
        sizing_mode="stretch_width",
    )
    pn.state.onload(load_list)
    return body, lambda _snap: None


def services_page(ctx: DashboardContext) -> pn.viewable.Viewable:
    return page(ctx, "/services", "Services", lambda s, c: build_services(ctx, s, c))
