"""The web board's static serving (app/web.py): the built index and hashed assets with
their caching headers, and `/` leading to GraphiQL while the board is not built."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from app.web import ASSET_CACHE_CONTROL, INDEX_CACHE_CONTROL, web_routes

INDEX = '<!doctype html><script type="module" src="/assets/index-3f2a1b.js"></script>'
ASSET = "console.log('board');"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=web_routes(tmp_path / "dist", fallback_url="/graphql"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


def build(dist: Path) -> None:
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text(INDEX)
    (dist / "assets" / "index-3f2a1b.js").write_text(ASSET)


async def test_unbuilt_board_leads_to_graphiql(client: httpx.AsyncClient) -> None:
    home = await client.get("/")
    assert home.status_code == 307
    assert home.headers["location"] == "/graphql"
    asset = await client.get("/assets/index-3f2a1b.js")
    assert asset.status_code == 404  # not a 500 for the missing directory


async def test_built_board_is_served_with_caching_headers(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    # Built while the server runs, as scripts/build-web may do: no restart needed.
    build(tmp_path / "dist")
    home = await client.get("/")
    assert home.status_code == 200
    assert home.text == INDEX
    assert home.headers["content-type"].startswith("text/html")
    assert home.headers["cache-control"] == INDEX_CACHE_CONTROL
    asset = await client.get("/assets/index-3f2a1b.js")
    assert asset.status_code == 200
    assert asset.text == ASSET
    assert asset.headers["cache-control"] == ASSET_CACHE_CONTROL
    revalidated = await client.get(
        "/assets/index-3f2a1b.js", headers={"if-none-match": asset.headers["etag"]}
    )
    assert revalidated.status_code == 304
    assert (await client.get("/assets/index-000000.js")).status_code == 404
    assert (await client.head("/")).status_code == 200
