"""The server `python -m app` runs: uvicorn's, ending open HTTP streams at shutdown
(app.streaming), with uvicorn's proxy-headers middleware without a frame of its own
(app.proxy_headers) and, once started, with the cycle collector tuned
(app.gc_tuning)."""

from __future__ import annotations

import socket

import uvicorn
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app.gc_tuning import CollectorTuning
from app.proxy_headers import FramelessProxyHeaders
from app.streaming import OpenStreams, StreamEndingServer


class CommitcastServer(StreamEndingServer):
    def __init__(
        self, config: uvicorn.Config, streams: OpenStreams, *, tune_collector: bool
    ) -> None:
        super().__init__(config, streams)
        self.tune_collector = tune_collector
        self._tuned = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn's Config.load() wrapped the app (proxy_headers, on by default); the
        # connections, accepted from here on, take the app from the config.
        loaded = self.config.loaded_app
        if type(loaded) is ProxyHeadersMiddleware:
            self.config.loaded_app = FramelessProxyHeaders.replacing(loaded)
        await super().startup(sockets)
        # Started: the app's lifespan has built everything that lives as long as the
        # process, which is what the tuning freezes.
        if self.tune_collector and not self.should_exit and not self._tuned:
            CollectorTuning.start()
            self._tuned = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().shutdown(sockets)
        finally:
            if self._tuned:
                self._tuned = False
                CollectorTuning.stop()
