"""What bounds a slow or piled-up client at the gateway, in the gateway itself.

uvicorn bounds the number of connections (`limit_concurrency`: a 503 beyond it) and the idle
time between requests (`timeout_keep_alive`), but not how long a request may take to arrive.
Three pieces close that:

- `BoundedH11Protocol`: uvicorn's h11 protocol with a deadline for each request's headers, so a
  connection that never finishes its request line or headers is closed.
- `BodyDeadline`: ASGI middleware giving each request body a total deadline and a longest pause
  between reads; past either the request is answered 408 and the connection closed, whatever
  the Content-Length promised.
- `UploadSlots`: at most N uploads are being received at once (each holds a socket and a
  temporary file); one more is answered 503 at once, before its body is read.

They are per gateway process. A reverse proxy in front (docs/deploy.md) can add its own limits;
these stay, so the gateway is safe on its own.
"""

from __future__ import annotations

import asyncio
from contextlib import contextmanager

from fastapi import HTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

CLOSE = {"Connection": "close"}


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol; a connection whose next request's headers have not all arrived
    `header_timeout` seconds after it opened (or after its last response) is closed."""

    header_timeout: float | None = None  # SPEECHQ_GATEWAY_HEADER_TIMEOUT, read at first use

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_header_deadline(None)

    def on_response_complete(self) -> None:
        finished = self.cycle  # a pipelined request may start inside the call below
        super().on_response_complete()
        self._arm_header_deadline(finished)

    def _arm_header_deadline(self, cycle) -> None:
        if BoundedH11Protocol.header_timeout is None:
            from workers.settings import Settings

            BoundedH11Protocol.header_timeout = Settings.from_env().gateway_header_timeout
        self.loop.call_later(self.header_timeout, self._header_deadline, cycle)

    def _header_deadline(self, cycle) -> None:
        # still the cycle of the deadline: no request's headers arrived since it was armed
        if self.cycle is cycle and not self.transport.is_closing():
            self.transport.close()


class BodyDeadline:
    """ASGI middleware: a request body must arrive within `body_timeout` seconds of its headers,
    with no pause longer than `read_timeout`; otherwise 408 (raised where the app reads it, so
    the app's own cleanup runs) and the connection is closed."""

    def __init__(self, app, body_timeout: float, read_timeout: float):
        self.app, self.body_timeout, self.read_timeout = app, body_timeout, read_timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        body_done = False

        async def bounded_receive():
            nonlocal body_done
            if body_done:  # after the body only a disconnect can come; waiting for it is free
                return await receive()
            wait = min(deadline - loop.time(), self.read_timeout)
            try:
                message = await asyncio.wait_for(receive(), max(wait, 0.0))
            except asyncio.TimeoutError:
                raise HTTPException(408, f"the request body did not arrive in time (the limits: "
                                         f"{self.body_timeout:g} s in all, {self.read_timeout:g} s "
                                         f"without data)", CLOSE) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, bounded_receive, send)


class UploadSlots:
    """A count of uploads in progress in this process (one event loop: no lock needed)."""

    def __init__(self, limit: int):
        self.limit, self.busy = limit, 0

    @contextmanager
    def slot(self):
        if self.busy >= self.limit:
            raise HTTPException(503, f"{self.limit} uploads are in progress, the limit "
                                     f"(SPEECHQ_MAX_CONCURRENT_UPLOADS); retry shortly",
                                {"Retry-After": "2", **CLOSE})
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1


def uvicorn_options(settings) -> dict:
    """uvicorn.run's keywords for these settings."""
    return {"http": BoundedH11Protocol, "limit_concurrency": settings.max_connections,
            "timeout_keep_alive": 5, "h11_max_incomplete_event_size": 16 * 1024}
