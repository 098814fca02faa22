"""schemathesis against the live admin listener's own ``/v1/openapi.json``: every
generated request is signed (SigV4, with a fresh signed ``x-gateway-nonce``, since
admin calls follow the replay rule); no answer may be a server error or differ from
the document (status code, content type, body schema).

Random key IDs never carry a valid checksum, so most path parameters are replaced by
one of a few real target keys (or a well-formed unknown one), picked from the generated
value: the lifecycle calls then run for real. The fuzzer signs with a key it cannot
rotate or revoke: it is not among the targets and no generated path names it (``assume``).
"""

from __future__ import annotations

import os
import secrets
import time
import zlib
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.admin.openapi import document
from gateway.keys.formats import generate_key_id
from gateway.signing.signer import sign_sigv4

from .admin_client import Key, bootstrap_admin
from .gateway_fixtures import GatewayProcess, Upstream, start_gateway, stop

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
# per operation and mode; FUZZ_EXAMPLES=300 for a longer run outside the suite
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))


class SigV4(requests.auth.AuthBase):
    """Signs the prepared request exactly as it goes on the wire."""

    def __init__(self, key: Key, host: str) -> None:
        self.key, self.host = key, host

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode()
        nonce = ("x-gateway-nonce", secrets.token_hex(8))
        for name, value in (nonce, *sign_sigv4(
                r.method or "GET", r.path_url, self.host, [nonce], body,
                key_id=self.key.key_id, secret=self.key.secret.encode(), now=time.time())):
            r.headers[name] = value
        return r


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
           ) -> Iterator[GatewayProcess]:
    gw = start_gateway(tmp_path_factory.mktemp("fuzz"), upstream)
    yield gw
    stop(gw.proc)


@pytest.fixture(scope="module")
def fuzz_key(fuzzed: GatewayProcess) -> Key:
    return bootstrap_admin(fuzzed, "fuzzer")


@pytest.fixture(scope="module")
def targets(fuzzed: GatewayProcess) -> list[str]:
    made = [bootstrap_admin(fuzzed, f"fuzz-target-{i}", "api:*").key_id for i in range(6)]
    return [*made, generate_key_id()]


@pytest.fixture(scope="module")
def session(fuzzed: GatewayProcess, fuzz_key: Key) -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.auth = SigV4(fuzz_key, f"127.0.0.1:{fuzzed.admin_port}")
        yield s


@pytest.fixture(scope="module")
def admin_schema(fuzzed: GatewayProcess) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzzed.admin_url}/v1/openapi.json")


# every documented operation, with valid and with invalid input (hypothesis drives the
# generation directly: schemathesis's own pytest plugin does not support pytest 9.2)
# (an operation without parameters or body has no invalid input to make)
CASES = [pytest.param(method.upper(), path, mode, id=f"{method.upper()} {path} {mode.value}")
         for path, ops in document()["paths"].items() for method, op in ops.items()
         for mode in GenerationMode
         if mode is GenerationMode.POSITIVE or op.get("parameters") or "requestBody" in op]


@pytest.mark.parametrize("method, path, mode", CASES)
def test_admin_api_matches_its_openapi_document(
        method: str, path: str, mode: GenerationMode, admin_schema: schemathesis.BaseSchema,
        fuzz_key: Key, targets: list[str], session: requests.Session) -> None:
    operation = admin_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
              database=None)
    def check(case: schemathesis.Case) -> None:
        generated = (case.path_parameters or {}).get("key_id")
        if isinstance(generated, str):
            pick = zlib.crc32(generated.encode("utf-8", "surrogatepass"))
            if pick % 4:  # three in four: a real key; else the generated (malformed) value
                case.path_parameters = {**(case.path_parameters or {}),
                                        "key_id": targets[pick % len(targets)]}
        assume(fuzz_key.key_id not in case.formatted_path)
        response = case.call(session=session)
        assert response.status_code != 401, response.text  # every case is signed, once
        case.validate_response(response, checks=CHECKS)

    check()
