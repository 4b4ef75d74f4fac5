"""The benchmark's own processes and the cycle collector.

A receiver holding hundreds of sockets (their connections, tasks and buffers: a few
hundred thousand objects) ran full collections during measured windows, each stopping
it for 90 to 165 ms (2026-12-02, gc callbacks in the 200 mutations/s window, two
receivers of 500 sockets; the process sending the mutations, 40 to 86 ms). Deliveries
that arrived meanwhile waited in their sockets and were counted late: the client, not
the server, set that window's p99. So before each window every benchmark process
collects once and freezes what is alive (`gc.freeze`): the window's own collections
walk only what the window allocates, a few milliseconds at most.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect, then keep what is alive out of every collection until the next call."""
    gc.unfreeze()  # (what the last window froze may be garbage by now)
    gc.collect()
    gc.freeze()
