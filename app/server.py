"""The server `python -m app` runs: uvicorn's, ending open HTTP streams at shutdown
(app.streaming) and, once started, with the cycle collector tuned (app.gc_tuning)."""

from __future__ import annotations

import socket

import uvicorn

from app.gc_tuning import CollectorTuning
from app.streaming import OpenStreams, StreamEndingServer


class CommitcastServer(StreamEndingServer):
    def __init__(
        self, config: uvicorn.Config, streams: OpenStreams, *, tune_collector: bool
    ) -> None:
        super().__init__(config, streams)
        self.tune_collector = tune_collector
        self._tuned = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
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
