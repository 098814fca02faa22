"""``HttpxAuth``: an ``httpx.Auth`` for ``httpx.Client`` and ``httpx.AsyncClient``
(imports httpx, so it is loaded only when used).

The shared ``SigningSession.attempts()`` generator does the work; the sync and
async flows below differ only in how they read: the request body before
signing (a multipart form or a file; bytes, text, form and JSON bodies are in
memory already) and the body of a 401 answer. What is signed is
``request.url.raw_path``, the exact target httpcore writes, and the ``Host``
header httpx built.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Generator

import httpx
from httpx._multipart import MultipartStream

from ._session import EXPIRES_HEADER, Attempts, SessionAdapter, auth_failure

__all__ = ["HttpxAuth"]


def _hashable(request: httpx.Request) -> bool:
    """Whether the body's bytes can be known before sending: in memory (bytes,
    text, form, JSON), a multipart form, or a file. An iterator or generator
    is a stream of unknown bytes."""
    stream = request.stream
    if isinstance(stream, (httpx.ByteStream, MultipartStream)):  # multipart re-reads files
        return True
    # httpx wraps file objects and iterators alike; a file is what has read()
    return callable(getattr(getattr(stream, "_stream", None), "read", None))


def _url(request: httpx.Request) -> str:
    return f"{request.url.scheme}://{request.headers['Host']}{request.url.raw_path.decode('ascii')}"


class HttpxAuth(SessionAdapter, httpx.Auth):
    """Sign every request of an ``httpx.Client`` or ``httpx.AsyncClient``::

        client = httpx.Client(auth=HttpxAuth(Credentials.from_env()))

    Two-key mode is on whenever the credentials hold a ``previous`` key.
    ``failures`` counts auth failures per key ID; ``key_id`` is the key tried first.
    """


    def _start(self, request: httpx.Request, body: bytes | None) -> Attempts:
        flow = self.session.attempts(request.method, _url(request),
                                     request.headers.multi_items(), body)
        request.headers.update(next(flow))
        return flow

    def _next(self, flow: Attempts, request: httpx.Request, response: httpx.Response) -> bool:
        """Sign the next attempt into ``request``; False when there is none."""
        self.session.notice_expiry(request.headers.get, response.headers.get(EXPIRES_HEADER))
        code = auth_failure(response.status_code, response.content) \
            if response.status_code == 401 else None
        try:
            request.headers.update(flow.send(code))
        except StopIteration:
            return False
        return True

    def sync_auth_flow(self, request: httpx.Request
                       ) -> Generator[httpx.Request, httpx.Response, None]:
        hashable = _hashable(request)
        if hashable:
            request.read()
        flow = self._start(request, request.content if hashable else None)
        while True:
            response = yield request
            if response.status_code == 401:
                response.read()
            if not self._next(flow, request, response):
                return

    async def async_auth_flow(self, request: httpx.Request
                              ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        hashable = _hashable(request)
        if hashable and isinstance(request.stream, AsyncIterable):
            await request.aread()
        elif hashable:  # a plain file: read it here, then httpx sends the bytes
            request.read()
        flow = self._start(request, request.content if hashable else None)
        while True:
            response = yield request
            if response.status_code == 401:
                await response.aread()
            if not self._next(flow, request, response):
                return
