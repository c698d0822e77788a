"""The login and logout pages and the Bokeh auth provider that sends every page without a session to login.

The password goes to the management API's ``POST /api/token`` (the dashboard checks nothing itself); the token
stays in the :class:`~aegis.dashboard.sessions.SessionStore` and the browser gets a signed, HttpOnly,
SameSite=Strict cookie with a random session id.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from typing import Any

from bokeh.server.auth_provider import AuthProvider
from tornado.web import RequestHandler

from .api_client import ApiError, ApiUnreachable, ManagementClient
from .sessions import COOKIE_NAME, SessionStore, UserSession

LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
TOKEN_MARGIN_S = 5.0
"""A session ends this long before its token, so no page is ever shown with a token the API would refuse."""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Aegis</title>
<style>
 body {{ font-family: system-ui, sans-serif; background: #f4f5f7; color: #1a1a1a; margin: 0; }}
 main {{ max-width: 22rem; margin: 4rem auto; background: #fff; padding: 2rem; border-radius: 8px;
        box-shadow: 0 1px 4px rgba(0,0,0,.15); }}
 h1 {{ font-size: 1.4rem; margin-top: 0; }}
 label {{ display: block; margin: 1rem 0 .25rem; font-weight: 600; }}
 input {{ width: 100%; box-sizing: border-box; padding: .5rem; font-size: 1rem; border: 1px solid #595959;
         border-radius: 4px; }}
 button {{ margin-top: 1.5rem; width: 100%; padding: .6rem; font-size: 1rem; background: #0b4f8a; color: #fff;
          border: 0; border-radius: 4px; cursor: pointer; }}
 .error {{ background: #fdecea; color: #8a1c12; border: 1px solid #8a1c12; padding: .5rem; border-radius: 4px; }}
 a {{ color: #0b4f8a; }}
</style></head>
<body><main>{body}</main></body></html>"""

_FORM = """<h1>Aegis dashboard</h1>
{error}
<form method="post" action="{action}">
 <input type="hidden" name="next" value="{next}">
 <label for="username">User name</label>
 <input id="username" name="username" autocomplete="username" required value="{username}">
 <label for="password">Password</label>
 <input id="password" name="password" type="password" autocomplete="current-password" required>
 <button type="submit">Log in</button>
</form>"""


def safe_next(path: str | None) -> str:
    """Where to go after login: a path on this server only (never ``//host`` or a URL: no open redirect)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def login_page(error: str = "", username: str = "", next_path: str = "/") -> str:
    """The login form; ``error`` is announced to screen readers (role=alert)."""
    err = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = _FORM.format(
        error=err, action=LOGIN_PATH, username=html.escape(username), next=html.escape(safe_next(next_path))
    )
    return _PAGE.format(title="Log in", body=body)


class _Handler(RequestHandler):
    store: SessionStore
    client: ManagementClient

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Frame-Options", "DENY")


class LoginHandler(_Handler):
    """``GET /login`` shows the form; ``POST /login`` asks the API for a token and opens a session."""

    def get(self) -> None:
        self.write(login_page(next_path=self.get_query_argument("next", "/")))

    async def post(self) -> None:
        username = self.get_body_argument("username", "")
        password = self.get_body_argument("password", "")
        next_path = safe_next(self.get_body_argument("next", "/"))
        try:
            token = await self.client.login(username, password)
        except ApiUnreachable:
            self.set_status(503)
            self.write(
                login_page("The management API is unreachable; try again shortly.", username, next_path)
            )
            return
        except ApiError as exc:
            self.set_status(401 if exc.status in (400, 401) else exc.status)
            message = (
                "Wrong user name or password."
                if exc.status in (400, 401, 422)
                else f"Login refused: {exc.detail}"
            )
            self.write(login_page(message, username, next_path))
            return
        session = UserSession(
            user=username,
            token=token.access_token,
            scopes=frozenset(token.scope.split()),
            expires_at=time.monotonic() + max(1.0, token.expires_in - TOKEN_MARGIN_S),
        )
        sid = self.store.add(session)
        self.set_signed_cookie(
            COOKIE_NAME, sid, expires_days=None, httponly=True, samesite="Strict", path="/"
        )
        self.redirect(next_path)


class LogoutHandler(_Handler):
    """Ends the session here (the API token is simply forgotten: it expires on its own)."""

    def get(self) -> None:
        sid = self.get_signed_cookie(COOKIE_NAME, max_age_days=1)
        self.store.remove(sid.decode() if sid else None)
        self.clear_cookie(COOKIE_NAME, path="/")
        self.write(
            _PAGE.format(
                title="Logged out",
                body=f'<h1>Logged out</h1><p><a href="{LOGIN_PATH}">Log in again</a></p>',
            )
        )


class DashboardAuth(AuthProvider):
    """Bokeh auth: a page or websocket without a live session has no user, so Bokeh redirects to login."""

    def __init__(self, store: SessionStore, client: ManagementClient) -> None:
        self._store = store
        self._login = type("BoundLogin", (LoginHandler,), {"store": store, "client": client})
        self._logout = type("BoundLogout", (LogoutHandler,), {"store": store, "client": client})
        super().__init__()

    @property
    def get_user(self) -> Callable[[Any], str | None]:
        def get_user(handler: RequestHandler) -> str | None:
            raw = handler.get_signed_cookie(COOKIE_NAME, max_age_days=1)
            session = self._store.get(raw.decode() if raw else None)
            return session.user if session else None

        return get_user

    @property
    def login_url(self) -> str:
        return LOGIN_PATH

    @property
    def login_handler(self) -> type[RequestHandler]:
        return self._login

    @property
    def logout_url(self) -> str:
        return LOGOUT_PATH

    @property
    def logout_handler(self) -> type[RequestHandler]:
        return self._logout
