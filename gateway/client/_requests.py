"""``RequestsAuth``: a ``requests.auth.AuthBase`` (imports requests, so it is loaded
only when used: ``gateway.client`` itself stays light).

What is signed is what urllib3 puts on the wire: the target passed through
urllib3's own target encoding (it upper-cases percent escapes and encodes what
``requote_uri`` leaves alone), and the ``Host`` http.client writes (lower-cased,
no trailing dot, no default port) unless the caller set one. A ``str`` body is
sent as the UTF-8 bytes that were hashed; a file is read once, hashed and sent
as those bytes; an iterator or generator is a stream (see ``SigV4Signer``).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import requests
from requests.auth import AuthBase
from urllib3.util.url import _encode_target

from ._session import EXPIRES_HEADER, Attempts, SessionAdapter, auth_failure
from ._signers import split_url

__all__ = ["RequestsAuth"]


def _body_bytes(request: requests.PreparedRequest) -> bytes | None:
    """The body as bytes (and set on the request so they are what is sent), or
    ``None`` for a stream."""
    body = request.body
    if body is None:
        return b""
    if isinstance(body, (bytes, bytearray, memoryview)):
        data = bytes(body)
    elif isinstance(body, str):
        data = body.encode("utf-8")
    elif isinstance(body, io.IOBase) or callable(getattr(body, "read", None)):
        raw = body.read()
        data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    else:  # iterators and generators: their bytes are known only while sending
        return None
    request.body = data
    request.headers.pop("Transfer-Encoding", None)
    request.headers["Content-Length"] = str(len(data))
    return data


def _host(url: str) -> str:
    # as urllib3 and http.client write it: lower case, no trailing dot, no default port
    _, host, _ = split_url(url)
    if host.endswith("]"):
        return host
    name, colon, port = host.rpartition(":")
    return f"{name.rstrip('.')}:{port}" if colon else host.rstrip(".")


class RequestsAuth(SessionAdapter, AuthBase):
    """Sign every request of a ``requests`` session or call::

        session.auth = RequestsAuth(Credentials.from_file("~/.config/gw.json"))

    Two-key mode is on whenever the credentials hold a ``previous`` key.
    ``failures`` counts auth failures per key ID; ``key_id`` is the key tried first.
    """


    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = _body_bytes(request)
        url = request.url or ""
        host = request.headers.get("Host") or _host(url)
        url = f"{url.partition(':')[0]}://{host}{_encode_target(request.path_url)}"
        flow = self.session.attempts(request.method or "GET", url,
                                     [("Host", host), *request.headers.items()], body)
        request.headers.update(next(flow))
        request.hooks["response"].append(self._on_response(flow))
        return request

    def _on_response(self, flow: Attempts) -> Callable[..., requests.Response]:
        session = self.session

        def hook(response: requests.Response, **kwargs: Any) -> requests.Response:
            while True:
                session.notice_expiry(response.request.headers.get,
                                      response.headers.get(EXPIRES_HEADER))
                status = response.status_code
                code = auth_failure(status, response.content) if status == 401 else None
                try:
                    headers = flow.send(code)
                except StopIteration:
                    return response
                # the retry, as requests' own HTTPDigestAuth sends it
                retry = response.request.copy()
                retry.headers.update(headers)
                response.close()
                again = response.connection.send(retry, **kwargs)
                again.history.append(response)
                again.request = retry
                response = again

        return hook
