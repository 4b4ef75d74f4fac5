"""The web board (web/, built by Vite into web/dist) served at `/`.

Vite names every asset after its content hash (`assets/index-3f2a1b.js`), so assets are
cached for good, and index.html, which names the current ones, is revalidated on every
load. Whether the build exists is checked per request: `./scripts/serve` or a developer
may build it while the server runs, and without it `/` keeps leading to GraphiQL, so
the API never depends on Node.js.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

DEFAULT_WEB_DIST = Path(__file__).resolve().parent.parent / "web" / "dist"
INDEX_CACHE_CONTROL = "no-cache"
ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"


def board_index(dist: Path) -> Path | None:
    """index.html of the built board, or None when it has not been built."""
    index = dist / "index.html"
    return index if index.is_file() else None


class _HashedAssets(StaticFiles):
    """web/dist/assets: content-hashed names, so cached forever; a 404 while unbuilt."""

    async def check_config(self) -> None:
        # StaticFiles raises (a 500) when its directory is missing; here that only
        # means the board is not built.
        return None

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = ASSET_CACHE_CONTROL
        return response


def web_routes(dist: Path, fallback_url: str) -> list[BaseRoute]:
    """`/` (the board, or a redirect to `fallback_url` when it is not built) and
    `/assets/*`."""

    async def home(_request: Request) -> Response:
        index = board_index(dist)
        if index is None:
            return RedirectResponse(fallback_url)
        return FileResponse(index, headers={"Cache-Control": INDEX_CACHE_CONTROL})

    return [
        Route("/", home, methods=["GET", "HEAD"]),
        Mount("/assets", _HashedAssets(directory=dist / "assets", check_dir=False)),
    ]
