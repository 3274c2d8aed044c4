"""The web console: its static files under /console/, served by the API server itself.

The console is plain HTML, ES modules and CSS in `radbridge/interfaces/console/static/`
(no build step, nothing fetched from elsewhere). It talks to the JSON API with the
bearer token the user pastes, so these files hold no data and need no token: they are
public, like /health. Only files that exist in that folder are served (a fixed table
read once from the package, so no path from the URL ever reaches the file system), with
a Content-Security-Policy that lets the page load nothing but itself and talk to nothing
but this server, and an ETag so that a reload costs a 304 per file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from radbridge.interfaces.api_support import ApiError

STATIC_PACKAGE = "radbridge.interfaces.console"
STATIC_FOLDER = "static"
INDEX = "index.html"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
"""The kinds of file the console is made of; anything else in the folder is not served."""

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
"""`no-cache` means "revalidate": the browser keeps the file and asks with its ETag."""


@dataclass(frozen=True)
class StaticAsset:
    """One file of the console, read once: its bytes, media type and ETag."""

    body: bytes
    media_type: str
    etag: str


def _walk(folder: Traversable, prefix: str = "") -> dict[str, StaticAsset]:
    assets: dict[str, StaticAsset] = {}
    for entry in folder.iterdir():
        name = f"{prefix}{entry.name}"
        if entry.is_dir():
            assets.update(_walk(entry, f"{name}/"))
            continue
        media_type = MEDIA_TYPES.get(name[name.rfind("."):]) if "." in name else None
        if media_type is not None:
            body = entry.read_bytes()
            etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
            assets[name] = StaticAsset(body, media_type, etag)
    return assets


@cache
def assets() -> dict[str, StaticAsset]:
    """Relative path -> asset, for every servable file of the console's folder."""
    return _walk(resources.files(STATIC_PACKAGE) / STATIC_FOLDER)


def _answer(request: Request, asset: StaticAsset) -> Response:
    headers = {**SECURITY_HEADERS, "ETag": asset.etag}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


async def console_root(request: Request) -> Response:
    """/console without the slash: relative module paths need the folder's URL."""
    return RedirectResponse("/console/", status_code=308)


async def console_index(request: Request) -> Response:
    return _answer(request, assets()[INDEX])


async def console_file(request: Request) -> Response:
    path: str = request.path_params["path"]
    asset = assets().get(path)
    if asset is None:
        raise ApiError(404, f"the console has no file {path[:100]!r}")
    return _answer(request, asset)


ROUTES = [
    Route("/console", console_root, methods=["GET", "HEAD"]),
    Route("/console/", console_index, methods=["GET", "HEAD"]),
    Route("/console/{path:path}", console_file, methods=["GET", "HEAD"]),
]
