"""A small HTTP/1.1 keep-alive client for the mutation driver.

httpx spends milliseconds of CPU per request and its pool scheduling grows with the
number of queued requests: at a few hundred mutations per second the driver, not the
server, would be measured. This client keeps `size` connections and sends one request
at a time on each (a request waits for a free connection), which is all the benchmark
needs: POST JSON, read a Content-Length response.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any


class HTTPError(RuntimeError):
    pass


class KeepAliveClient:
    def __init__(self, host: str, port: int, size: int = 32) -> None:
        self.host = host
        self.port = port
        self.size = size
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = (
            asyncio.Queue()
        )
        for _ in range(size):
            self._idle.put_nowait(None)  # opened on first use

    async def post_json(
        self, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> dict[str, Any]:
        payload = json.dumps(body).encode()
        head = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head += ["Content-Type: application/json", f"Content-Length: {len(payload)}", "", ""]
        request = "\r\n".join(head).encode() + payload
        for attempt in range(2):
            connection = await self._idle.get()
            try:
                if connection is None:
                    connection = await asyncio.open_connection(self.host, self.port)
                reader, writer = connection
                writer.write(request)
                status, response = await self._read_response(reader)
            except (OSError, asyncio.IncompleteReadError, HTTPError):
                if connection is not None:
                    with contextlib.suppress(Exception):
                        connection[1].close()
                self._idle.put_nowait(None)
                if attempt == 1:
                    raise
                continue
            self._idle.put_nowait(connection)
            if status != 200:
                raise HTTPError(f"HTTP {status}: {response[:200]!r}")
            result: dict[str, Any] = json.loads(response)
            return result
        raise AssertionError("unreachable")

    @staticmethod
    async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length is None:
            raise HTTPError("response without Content-Length")
        return status, await reader.readexactly(length)

    async def close(self) -> None:
        while not self._idle.empty():
            connection = self._idle.get_nowait()
            if connection is not None:
                connection[1].close()
