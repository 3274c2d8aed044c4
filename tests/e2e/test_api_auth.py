"""A real `radbridge run` with API TLS: a self-signed certificate made here, the first
admin token written to the data dir (0600), HTTPS answers with it and 401 without,
plain HTTP gets no answer, and the token never reaches the node's log."""

from __future__ import annotations

import ipaddress
import json
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from radbridge.interfaces.auth.bootstrap import ADMIN_TOKEN_FILE
from tests.e2e.conftest import Spawn, wait_until

pytestmark = pytest.mark.slow

CHANNEL = yaml.safe_dump({"name": "intake", "source": {"type": "http"},
                          "destinations": [{"name": "out", "type": "null"}]})


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key: (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "radbridge test")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "api-cert.pem", folder / "api-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def test_the_api_over_tls_with_the_first_admin_token(spawn: Spawn, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    node = spawn(channel_yaml=CHANNEL, database_url=f"sqlite:///{tmp_path / 'store.db'}",
                 node_id="tls", extra_args=("--api-tls-cert", str(cert),
                                            "--api-tls-key", str(key)))
    node.start(ready=False)
    https = httpx.Client(base_url=f"https://127.0.0.1:{node.port}", timeout=10.0,
                         verify=ssl.create_default_context(cafile=str(cert)))

    def ready() -> bool:
        assert node.running, node.log_tail()
        try:
            return https.get("/ready", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, 20, lambda: f"the node to answer https:\n{node.log_tail()}",
                   interval=0.1)
        token_file = node.data_dir / ADMIN_TOKEN_FILE
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        admin = {"Authorization": f"Bearer {token}"}

        refused = https.get("/api/channels")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == \
            'Bearer realm="radbridge"'
        assert [c["name"] for c in https.get("/api/channels", headers=admin).json()[
            "channels"]] == ["intake"]
        posted = https.post("/api/channels/intake/messages", content=b"MSH|tls",
                            headers={**admin, "Content-Type": "text/plain"})
        assert posted.status_code == 202
        detail = https.get(f"/api/messages/{posted.json()['message_id']}", headers=admin)
        assert detail.status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{node.port}/ready", timeout=5.0)

        viewed = node.cli("audit", "query", "--action", "message.viewed")
        assert viewed.returncode == 0, viewed.stderr
        assert [e["actor"] for e in json.loads(viewed.stdout)["events"]] == [
            "token:bootstrap-admin"]

        assert node.stop_gracefully() == 0
        node.start(ready=False)
        wait_until(ready, 20, lambda: f"the node to answer https again:\n{node.log_tail()}",
                   interval=0.1)
        assert token_file.read_text().strip() == token  # written on the first start only
        assert https.get("/api/channels", headers=admin).status_code == 200
        log = node.log_text()
        assert token not in log and token[4:20] not in log
        assert f"written to {token_file}" in log and "API on https://" in log
    finally:
        https.close()
