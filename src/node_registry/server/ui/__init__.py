"""The web dashboard at ``/ui``: static HTML, CSS and ES modules shipped inside the package.

Everything the page shows comes from the Kubernetes API of ``nodepassports`` (list once,
then the same NDJSON watch kubectl reads), read with the operator's bearer token. The only
route added here besides the files is ``/ui/config.json``: the lifecycle timings the page
needs to tell how fresh a node's last heartbeat can be (heartbeats themselves produce no watch
events), and which of an object's fields the registry owns, so the page shows the passport as
the node sent it apart from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from node_registry import __version__
from node_registry.config import Settings
from node_registry.passport.objects import SERVER_METADATA, SERVER_STATUS
from node_registry.server.auth import Authenticator, authorize_read

STATIC_DIR = Path(__file__).with_name("static")
#: The page only talks to its own origin and renders node data as text, never as markup.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate on every load (ETag/Last-Modified make that a 304): an upgraded registry
    # never runs an old dashboard against its new API.
    "Cache-Control": "no-cache",
}

MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
}


class DashboardFiles(StaticFiles):
    """``StaticFiles`` with the dashboard's security and caching headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        # ES modules need a JavaScript type, and nosniff forbids guessing: do not depend on
        # the platform's MIME table (some map .js to text/plain).
        media = MEDIA_TYPES.get(Path(path).suffix)
        if media is not None and response.status_code == 200:
            response.headers["Content-Type"] = media
        return response


def dashboard_config(settings: Settings) -> dict[str, Any]:
    """What the page needs to know about the registry it talks to."""
    heartbeat = settings.heartbeat
    return {
        "version": __version__,
        "heartbeatIntervalSeconds": heartbeat.interval_seconds,
        "notReadyAfterSeconds": heartbeat.not_ready_after_seconds,
        "ttlSeconds": heartbeat.ttl_seconds,
        "gracePeriodSeconds": heartbeat.grace_period_seconds,
        "controllerPeriodSeconds": settings.controller.period_seconds,
        "bookmarkIntervalSeconds": settings.server.bookmark_interval_seconds,
        "registryFields": {"metadata": list(SERVER_METADATA), "status": list(SERVER_STATUS)},
    }


def mount_dashboard(app: FastAPI, settings: Settings) -> None:
    """Serve the dashboard at ``/ui/`` and send ``/`` there; call after the API's routes."""
    config = dashboard_config(settings)

    # Relative redirects, so the dashboard also works behind a proxy that adds a path prefix.
    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("ui/", status_code=307)

    @app.get("/ui", include_in_schema=False)
    async def ui_slash() -> RedirectResponse:
        return RedirectResponse("ui/", status_code=307)

    @app.get("/ui/config.json", include_in_schema=False)
    async def ui_config(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> JSONResponse:
        authenticator: Authenticator = request.app.state.authenticator
        authorize_read(authenticator.authenticate(authorization))
        return JSONResponse(config, headers={"Cache-Control": "no-store"})

    app.mount("/ui", DashboardFiles(directory=STATIC_DIR, html=True), name="ui")
