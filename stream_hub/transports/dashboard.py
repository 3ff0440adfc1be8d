"""The live dashboard: its static files (read once from the package) and the
routes that serve them on the REST port (``/`` and ``/dashboard/<file>``);
the page carries its Content-Security-Policy (:mod:`.headers`)."""

from __future__ import annotations

import logging
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from .headers import PAGE_HEADERS, page_policy
from .params import ServerView

__all__ = ["add_dashboard_routes"]

logger = logging.getLogger(__name__)


def dashboard_files() -> dict[str, tuple[bytes, str]]:
    """The dashboard's static files, read once into memory."""
    types = {
        ".html": "text/html; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".svg": "image/svg+xml",
        ".png": "image/png",
        ".ico": "image/x-icon",
    }
    files: dict[str, tuple[bytes, str]] = {}
    try:
        root = resources.files("stream_hub") / "dashboard"
        for entry in root.iterdir():
            name = entry.name
            suffix = name[name.rfind(".") :] if "." in name else ""
            if entry.is_file() and suffix in types:
                files[name] = (entry.read_bytes(), types[suffix])
    except (FileNotFoundError, NotADirectoryError):  # pragma: no cover - broken install
        logger.warning("dashboard files are missing from the installed package")
    return files


def add_dashboard_routes(app: FastAPI, server: ServerView) -> None:
    """Serve the dashboard at ``/`` and its files at ``/dashboard/<name>``."""
    dashboard = dashboard_files()

    @app.get("/", include_in_schema=False)
    async def index(request: Request) -> Response:
        # The policy names the ports the page connects to: those of now.
        policy = page_policy(request.headers.get("host"), server.ports, server.config.cors_origins)
        headers = {"Content-Security-Policy": policy, **PAGE_HEADERS}
        page = dashboard.get("index.html")
        if page is None:
            return HTMLResponse("<h1>stream_hub</h1><p>Dashboard files are missing.</p>", headers=headers)
        return Response(page[0], media_type=page[1], headers=headers)

    @app.get("/dashboard/{name}", include_in_schema=False)
    async def dashboard_file(name: str) -> Response:
        entry = dashboard.get(name)
        if entry is None:
            return JSONResponse({"error": f"no dashboard file {name!r}"}, status_code=404)
        return Response(entry[0], media_type=entry[1], headers={"Cache-Control": "no-cache"})
