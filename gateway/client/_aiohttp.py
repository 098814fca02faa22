"""``aiohttp_middleware()``: an aiohttp (≥ 3.12) client middleware (imports aiohttp,
so it is loaded only when used).

What is signed is ``request.url.raw_path_qs`` — the target aiohttp writes
after yarl has normalised the URL (dot segments resolved, characters quoted) —
and the ``Host`` header aiohttp built. Middlewares run for every redirect hop,
so each hop is signed for its own URL.
"""

from __future__ import annotations

from aiohttp import ClientHandlerType, ClientRequest, ClientResponse
from aiohttp.multipart import BodyPartReaderPayload
from aiohttp.payload import AsyncIterablePayload, BytesPayload

from ._credentials import Credentials
from ._errors import UnsignableBody
from ._session import EXPIRES_HEADER, Scheme, SigningSession, auth_failure

__all__ = ["SigningMiddleware", "aiohttp_middleware"]


async def _body_bytes(request: ClientRequest) -> bytes | None:
    """The body's bytes, or ``None`` for a stream (an async iterable, a part being
    read from another message). A file or multipart form is replaced by the bytes
    that were hashed, so what is sent is what was signed."""
    body = request.body
    if body == b"":
        return b""
    if request.compress:  # the writer would deflate after hashing: another body
        raise UnsignableBody(
            f"aiohttp compresses this body while sending it (compress={request.compress!r}), "
            "so its digest cannot be signed: compress it yourself and send the bytes with "
            "a Content-Encoding header")
    if isinstance(body, BytesPayload):  # bytes, str, JSON, url-encoded form
        return await body.as_bytes()
    if isinstance(body, (AsyncIterablePayload, BodyPartReaderPayload)):
        return None
    data = await body.as_bytes()  # a file, a multipart form
    await request.update_body(data)
    return data


class SigningMiddleware:
    """The middleware ``aiohttp_middleware()`` returns. ``failures`` counts auth
    failures per key ID; ``key_id`` is the key tried first."""

    def __init__(self, session: SigningSession) -> None:
        self.session = session

    @property
    def key_id(self) -> str:
        return self.session.key_id

    @property
    def failures(self) -> dict[str, int]:
        return self.session.failures

    async def __call__(self, request: ClientRequest,
                       handler: ClientHandlerType) -> ClientResponse:
        body = await _body_bytes(request)
        url = f"{request.url.scheme}://{request.headers['Host']}{request.url.raw_path_qs}"
        flow = self.session.attempts(request.method, url, request.headers.items(), body)
        headers = next(flow)
        while True:
            request.headers.update(headers)
            response = await handler(request)
            self.session.notice_expiry(request.headers.get, response.headers.get(EXPIRES_HEADER))
            code = auth_failure(401, await response.read()) if response.status == 401 else None
            try:
                headers = flow.send(code)
            except StopIteration:
                return response
            response.release()


def aiohttp_middleware(credentials: Credentials, *, scheme: Scheme = "sigv4",
                       region: str = "local", service: str = "gateway",
                       unsigned_payload: bool = False,
                       retry_current_after: float = 60.0) -> SigningMiddleware:
    """Sign every request of a ``ClientSession``::

        async with aiohttp.ClientSession(
                middlewares=(aiohttp_middleware(Credentials.from_env()),)) as http:
            ...

    Two-key mode is on whenever the credentials hold a ``previous`` key.
    """
    return SigningMiddleware(SigningSession(
        credentials, scheme=scheme, region=region, service=service,
        unsigned_payload=unsigned_payload, retry_current_after=retry_current_after))
