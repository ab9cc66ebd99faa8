"""One ``send()`` per HTTP response under uvicorn's httptools protocol.

uvicorn writes a response in two ``transport.write`` calls (status line and
headers, then the body), and uvloop sends each at once: two syscalls and two
TCP segments per small JSON answer. :class:`CoalescingHttpToolsProtocol`
gives the protocol a transport that holds writes until the end of the
current event-loop iteration and sends them joined. Nothing is held longer
than that (a ``call_soon`` flushes), so a header-only answer, a
``100 Continue`` or a streamed body goes out exactly as before, one loop
turn later at most; ``close()`` and ``abort`` flush or drop like the real
transport. Measured on the serving benchmark: see ``benchmarks/serving.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _CoalescingTransport:
    """Forwards everything to ``transport``; ``write`` is joined per loop iteration."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._held:
            self._loop.call_soon(self._flush)
        self._held.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def _flush(self) -> None:
        if self._held:
            data = b"".join(self._held) if len(self._held) > 1 else self._held[0]
            self._held.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing each response in one ``send()``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
