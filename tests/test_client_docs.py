"""The non-Python recipes of docs/client.md, run as written: curl --aws-sigv4 and
botocore's own signer and HTTP session, against the verifying stand-in server."""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from botocore.httpsession import URLLib3Session

from .client_server import VerifyingServer, new_key, running

KEY_ID, SECRET = new_key()
CURL = shutil.which("curl")


@pytest.fixture(scope="module")
def server() -> Iterator[VerifyingServer]:
    if CURL is None:
        pytest.fail("curl is not installed: run 'apt-get install -y curl' (.ci/run does this)")
    with running(VerifyingServer()) as srv:
        srv.accept({KEY_ID: SECRET})
        yield srv


def curl(*args: str) -> tuple[int, dict[str, object]]:
    assert CURL is not None
    out = subprocess.run(
        [CURL, "-sS", "-w", "\n%{http_code}", "--aws-sigv4", "aws:amz:local:gateway",
         "--user", f"{KEY_ID}:{SECRET}", *args],
        capture_output=True, text=True, check=True, timeout=30).stdout
    body, _, status = out.rpartition("\n")
    return int(status), json.loads(body)


def test_curl_get_with_a_sorted_plain_query_and_a_nonce(server: VerifyingServer) -> None:
    status, echo = curl("-H", f"X-Gateway-Nonce: {secrets.token_hex(16)}",
                        f"{server.url}/api/items?limit=10&sort=name")
    assert status == 200, echo
    assert "x-gateway-nonce" in echo["components"]  # type: ignore[operator]


def test_curl_uploads_a_file_with_data_binary(server: VerifyingServer, tmp_path: Path) -> None:
    upload = tmp_path / "report.json"
    upload.write_bytes(b'{"rows": [1, 2, 3]}\n')
    status, echo = curl("-H", "Content-Type: application/json",
                        "--data-binary", f"@{upload}", f"{server.url}/api/reports")
    assert status == 200, echo
    assert echo["body_sha256"] == hashlib.sha256(upload.read_bytes()).hexdigest()


def test_curl_upload_with_T_is_refused(server: VerifyingServer, tmp_path: Path) -> None:
    # curl signs -T uploads with the hash of an empty body: the documented pitfall
    upload = tmp_path / "report.json"
    upload.write_bytes(b"payload")
    status, echo = curl("-T", str(upload), f"{server.url}/api/reports")
    assert (status, echo["error"]) == (401, "signature_invalid")


def test_botocore_signer_with_a_custom_endpoint(server: VerifyingServer) -> None:
    request = AWSRequest(
        method="POST", url=f"{server.url}/api/items?b=2&a=1", data=b'{"name": "widget"}',
        headers={"Content-Type": "application/json",
                 "X-Gateway-Nonce": secrets.token_urlsafe(16)})
    SigV4Auth(BotoCredentials(KEY_ID, SECRET), "gateway", "local").add_auth(request)
    response = URLLib3Session().send(request.prepare())
    echo = json.loads(response.content)
    assert response.status_code == 200, echo
    assert echo["json"] == {"name": "widget"} and echo["body_signed"]
