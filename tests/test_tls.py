"""TLS terminated in the gateway itself ([server] tls_cert / tls_key): a signed
request over HTTPS with a self-signed certificate."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import shutil
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .gateway_fixtures import start_gateway, start_upstream, stop


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


async def test_signed_request_over_https(tmp_path: Path) -> None:
    cert, key_file = self_signed(tmp_path)
    up = start_upstream(tmp_path)
    gw = start_gateway(tmp_path, up, server=f'tls_cert = "{cert}"\ntls_key = "{key_file}"')
    try:
        key = await gw.create_key()
        proc = await asyncio.create_subprocess_exec(
            shutil.which("curl") or "curl", "-sS", "--cacert", str(cert),
            "--aws-sigv4", "aws:amz:local:gateway",
            "--user", f"{key.record.key_id}:{key.secret.reveal()}",
            f"https://127.0.0.1:{gw.port}/api/tls/x?a=1", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        echo = json.loads(out)
        assert echo["target"] == "/api/tls/x?a=1"
        assert ["X-Forwarded-Proto", "https"] in echo["headers"]
    finally:
        stop(gw.proc)
        stop(up.proc)
