"""End to end: each adapter (requests, httpx sync and async, aiohttp) against a
real verifying server on 127.0.0.1 (``tests/client_server.py``, a stand-in for
the gateway's proxy until it lands), with both schemes.

The server verifies the raw target and the exact body it received, so a pass
proves that the path and query on the wire are byte for byte what was signed.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import requests

from gateway.client import Credentials, HttpxAuth, RequestsAuth, UnsignableBody, aiohttp_middleware
from gateway.signing import Policy

from .client_server import VerifyingServer, new_key, running

ADAPTERS = ["requests", "httpx", "httpx-async", "aiohttp"]
SCHEMES = ["sigv4", "rfc9421"]
KEY_ID, SECRET = new_key()
CREDS = Credentials(KEY_ID, SECRET)


@pytest.fixture(scope="module")
def server() -> Iterator[VerifyingServer]:
    with running(VerifyingServer()) as srv:
        srv.accept({KEY_ID: SECRET})
        yield srv


def make_auth(adapter: str, **options: Any) -> Any:
    if adapter == "requests":
        return RequestsAuth(CREDS, **options)
    if adapter.startswith("httpx"):
        return HttpxAuth(CREDS, **options)
    return aiohttp_middleware(CREDS, **options)


def call(adapter: str, auth: Any, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    """One request through ``adapter``; ``kw`` as requests takes it (params, json,
    data, files as {name: (filename, bytes)}, or a raw ``body``)."""
    if adapter == "requests":
        if "body" in kw:
            kw["data"] = kw.pop("body")
        with requests.Session() as s:
            r = s.request(method, url, auth=auth, **kw)
            return r.status_code, r.json()
    if adapter == "httpx":
        with httpx.Client(auth=auth) as client:
            r = client.request(method, url, **_httpx_kw(kw))
            return r.status_code, r.json()
    return asyncio.run(_async_call(adapter, auth, method, url, kw))


def _httpx_kw(kw: dict[str, Any]) -> dict[str, Any]:
    out = dict(kw)
    if "body" in out:
        out["content"] = out.pop("body")
    return out


async def _async_call(adapter: str, auth: Any, method: str, url: str,
                      kw: dict[str, Any]) -> tuple[int, Any]:
    if adapter == "httpx-async":
        async with httpx.AsyncClient(auth=auth) as client:
            r = await client.request(method, url, **_httpx_kw(kw))
            return r.status_code, r.json()
    data: Any = kw.pop("body", None) or kw.pop("data", None)
    files = kw.pop("files", None)
    if files:
        form = aiohttp.FormData()
        for name, value in (data or {}).items():
            form.add_field(name, value)
        for name, (filename, content) in files.items():
            form.add_field(name, io.BytesIO(content), filename=filename)
        data = form
    async with aiohttp.ClientSession(middlewares=(auth,)) as session, \
            session.request(method, url, data=data, **kw) as r:
        return r.status, await r.json()


def ok(status: int, echo: Any) -> Any:
    assert status == 200, echo
    assert echo["key_id"] == KEY_ID
    assert "x-gateway-nonce" in echo["components"]
    return echo


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("adapter", ADAPTERS)
class TestEveryBody:
    def test_get_unicode_path_and_repeated_query_keys(self, server: VerifyingServer,
                                                      adapter: str, scheme: str) -> None:
        params = [("tag", "b"), ("tag", "a"), ("q", "x y+z"), ("empty", ""), ("ü", "ß")]
        echo = ok(*call(adapter, make_auth(adapter, scheme=scheme), "GET",
                        server.url + "/api/ünï cödé/ß", params=params))
        assert echo["path"] == "/api/ünï cödé/ß"
        assert echo["query"] == [list(p) for p in params]

    def test_pre_encoded_target_with_lower_case_escapes(self, server: VerifyingServer,
                                                        adapter: str, scheme: str) -> None:
        # each library re-encodes such a URL its own way; the signature must follow it
        url = server.url + "/api/a%c3%a9b/~x-y_z.txt?b=2&a=%2f&a=1&c"
        echo = ok(*call(adapter, make_auth(adapter, scheme=scheme), "GET", url))
        assert echo["path"] == "/api/aéb/~x-y_z.txt"
        assert echo["query"] == [["b", "2"], ["a", "/"], ["a", "1"], ["c", ""]]

    def test_post_json(self, server: VerifyingServer, adapter: str, scheme: str) -> None:
        doc = {"name": "é ü", "n": [1, 2.5, None], "nested": {"k": "v"}}
        echo = ok(*call(adapter, make_auth(adapter, scheme=scheme), "POST",
                        server.url + "/api/items", json=doc))
        assert echo["json"] == doc and echo["body_signed"]

    def test_post_form(self, server: VerifyingServer, adapter: str, scheme: str) -> None:
        echo = ok(*call(adapter, make_auth(adapter, scheme=scheme), "POST",
                        server.url + "/api/form", data={"a": "1", "b": "ü & = +"}))
        assert echo["form"] == [["a", "1"], ["b", "ü & = +"]] and echo["body_signed"]

    def test_post_multipart(self, server: VerifyingServer, adapter: str, scheme: str) -> None:
        echo = ok(*call(adapter, make_auth(adapter, scheme=scheme), "POST",
                        server.url + "/api/upload", data={"a": "1"},
                        files={"f": ("notes.txt", b"hello\r\nworld")}))
        assert echo["content_type"].startswith("multipart/form-data")
        assert echo["form"] == [["a", "1"], ["f", "notes.txt", "hello\r\nworld"]]
        assert echo["body_signed"]

    def test_put_bytes_and_text(self, server: VerifyingServer, adapter: str,
                                scheme: str) -> None:
        auth = make_auth(adapter, scheme=scheme)
        raw = bytes(range(256))
        echo = ok(*call(adapter, auth, "PUT", server.url + "/api/blob", body=raw,
                        headers={"Content-Type": "application/octet-stream"}))
        assert echo["body_sha256"] == hashlib.sha256(raw).hexdigest()
        text = "ünïcödé text"
        echo = ok(*call(adapter, auth, "PUT", server.url + "/api/text", body=text,
                        headers={"Content-Type": "text/plain; charset=utf-8"}))
        assert echo["body_sha256"] == hashlib.sha256(text.encode()).hexdigest()

    def test_file_upload(self, server: VerifyingServer, adapter: str, scheme: str,
                         tmp_path: Path) -> None:
        path = tmp_path / "upload.bin"
        path.write_bytes(b"file body \x00\x01" * 1000)
        with open(path, "rb") as handle:
            echo = ok(*call(adapter, make_auth(adapter, scheme=scheme), "POST",
                            server.url + "/api/file", body=handle))
        assert echo["body_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert echo["body_signed"]

    def test_identical_requests_in_one_second_are_not_replays(
            self, server: VerifyingServer, adapter: str, scheme: str) -> None:
        auth = make_auth(adapter, scheme=scheme)
        for _ in range(3):
            ok(*call(adapter, auth, "GET", server.url + "/api/same?x=1"))


def stream(adapter: str) -> Any:
    if adapter == "aiohttp" or adapter == "httpx-async":
        async def chunks() -> Any:
            yield b"streamed "
            yield b"body"
        return chunks()
    return iter([b"streamed ", b"body"])


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_stream_is_refused_with_a_clear_error(server: VerifyingServer, adapter: str,
                                                 scheme: str) -> None:
    before = sum(server.served.values())
    with pytest.raises(UnsignableBody, match="streamed body cannot be hashed"):
        call(adapter, make_auth(adapter, scheme=scheme), "POST", server.url + "/api/s",
             body=stream(adapter))
    assert sum(server.served.values()) == before  # nothing was sent


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_stream_goes_unsigned_only_when_asked(adapter: str) -> None:
    with running(VerifyingServer(Policy(allow_unsigned_payload=True))) as server:
        server.accept({KEY_ID: SECRET})
        auth = make_auth(adapter, unsigned_payload=True)
        status, echo = call(adapter, auth, "POST", server.url + "/api/s", body=stream(adapter))
        assert ok(status, echo)["body_signed"] is False
        assert echo["body_sha256"] == hashlib.sha256(b"streamed body").hexdigest()
        # bytes are still hashed under unsigned_payload=True
        assert ok(*call(adapter, auth, "POST", server.url + "/api/b", json={"a": 1})
                  )["body_signed"] is True


def test_the_gateway_default_refuses_unsigned_payload(server: VerifyingServer) -> None:
    status, echo = call("requests", make_auth("requests", unsigned_payload=True), "POST",
                        server.url + "/api/s", body=stream("requests"))
    assert (status, echo["error"]) == (400, "unsupported_payload")


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("host", ["LocalHost", "LOCALHOST"])
def test_the_host_is_signed_as_the_library_sends_it(server: VerifyingServer, adapter: str,
                                                    scheme: str, host: str) -> None:
    url = server.url.replace("127.0.0.1", host) + "/api/host"
    ok(*call(adapter, make_auth(adapter, scheme=scheme), "GET", url))


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_host_header_set_by_the_caller_is_the_one_signed(server: VerifyingServer,
                                                           adapter: str) -> None:
    ok(*call(adapter, make_auth(adapter), "GET", server.url + "/api/vhost",
             headers={"Host": "api.internal.example"}))


@pytest.mark.parametrize("url", ["http://Example.COM.:80/x", "http://[::1]:8080/",
                                 "https://h.example:443/", "http://user:pw@H.Example:81/p?q",
                                 "https://gw.example./a"])
def test_requests_host_is_the_one_http_client_writes(url: str) -> None:
    # no name resolution needed: urllib3's own connection object says what it will send
    from urllib3 import PoolManager

    from gateway.client._requests import _host

    conn = PoolManager().connection_from_url(url)._new_conn()
    default = 443 if url.startswith("https") else 80
    host = f"[{conn.host}]" if ":" in conn.host else conn.host
    assert _host(url) == (host if conn.port == default else f"{host}:{conn.port}")


def test_aiohttp_compress_is_refused_and_pre_compressed_bytes_work(
        server: VerifyingServer) -> None:
    import zlib

    async def go() -> tuple[int, Any]:
        async with aiohttp.ClientSession(middlewares=(make_auth("aiohttp"),)) as session:
            with pytest.raises(UnsignableBody, match="compress it yourself"):
                await session.post(server.url + "/api/z", data=b"x" * 100, compress="deflate")
            body = zlib.compress(b"x" * 100)
            async with session.post(server.url + "/api/z", data=body,
                                    headers={"Content-Encoding": "deflate"}) as r:
                return r.status, await r.json()

    echo = ok(*asyncio.run(go()))
    assert echo["body_sha256"] == hashlib.sha256(zlib.compress(b"x" * 100)).hexdigest()


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("adapter", ["httpx-async", "aiohttp"])
def test_concurrent_identical_requests_all_pass(server: VerifyingServer, adapter: str,
                                                scheme: str) -> None:
    auth = make_auth(adapter, scheme=scheme)
    url = server.url + "/api/burst?page=1"

    async def burst() -> list[int]:
        if adapter == "aiohttp":
            async with aiohttp.ClientSession(middlewares=(auth,)) as session:
                async def one() -> int:
                    async with session.get(url) as r:
                        return r.status
                return list(await asyncio.gather(*(one() for _ in range(50))))
        async with httpx.AsyncClient(auth=auth) as client:
            responses = await asyncio.gather(*(client.get(url) for _ in range(50)))
            return [r.status_code for r in responses]

    assert asyncio.run(burst()) == [200] * 50
