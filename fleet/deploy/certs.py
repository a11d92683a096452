"""The fleet's own CA and keys, made with `cryptography` (no openssl command lines to get wrong).

    <state_dir>/pki/ca.pem, ca.key             the fleet CA (EC P-384, 5 years); ca.key never leaves the host
    <state_dir>/pki/superlink.pem, .key        the SuperLink's TLS server certificate (SANs: its addresses)
    <state_dir>/pki/nodes/<board>.key, .pub    SuperNode authentication key pair (OpenSSH EC P-384, what
                                               Flower's `--auth-supernode-private-key` and
                                               `flwr supernode register` read)
    <state_dir>/pki/agents/<board>.pem, .key   the board agent's TLS server certificate (SAN: board address)
    <state_dir>/pki/agent-client.pem, .key     the client certificate the host's RemoteAgentKernel presents

Private keys are written 0600. Existing files are reused, so boards keep their identity across pushes.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CURVE = ec.SECP384R1()
CA_DAYS = 5 * 365
LEAF_DAYS = 2 * 365


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Write atomically through a new temporary file of our own: created exclusively (O_EXCL, never
    following a link, so a stale or planted ``*.tmp`` is neither reused nor written through), its mode
    set on the open descriptor (0600 for keys whatever the umask or an old file said), then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    return serialization.load_pem_private_key(path.read_bytes(), password=None)  # type: ignore[return-value]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ecufl fleet"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class PKI:
    def __init__(self, state_dir: Path):
        self.dir = Path(state_dir) / "pki"
        self.ca_pem = self.dir / "ca.pem"
        self.ca_key = self.dir / "ca.key"

    # --- CA -------------------------------------------------------------------------------------
    def ensure_ca(self) -> Path:
        if self.ca_pem.is_file() and self.ca_key.is_file():
            return self.ca_pem
        key = ec.generate_private_key(CURVE)
        name = _name("ecufl fleet CA")
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(_now() - dt.timedelta(minutes=5)).not_valid_after(_now() + dt.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                             crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA384()))
        _write(self.ca_key, _pem_key(key), private=True)
        _write(self.ca_pem, cert.public_bytes(serialization.Encoding.PEM))
        return self.ca_pem

    # --- leaves ---------------------------------------------------------------------------------
    def leaf(self, stem: Path, cn: str, *, hosts: list[str] = (), server: bool = True, client: bool = False) -> tuple[Path, Path]:
        """Certificate + key signed by the CA at ``stem``.pem/.key; reused if it exists with these SANs."""
        self.ensure_ca()
        pem, keyf = stem.with_suffix(".pem"), stem.with_suffix(".key")
        sans = []
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        if pem.is_file() and keyf.is_file():
            old = x509.load_pem_x509_certificate(pem.read_bytes())
            try:
                have = set(old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
            except x509.ExtensionNotFound:
                have = set()
            if have == set(sans) and old.not_valid_after_utc > _now() + dt.timedelta(days=7):
                return pem, keyf
        ca_key = _load_key(self.ca_key)
        ca = x509.load_pem_x509_certificate(self.ca_pem.read_bytes())
        key = ec.generate_private_key(CURVE)
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(_now() - dt.timedelta(minutes=5)).not_valid_after(_now() + dt.timedelta(days=LEAF_DAYS))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(ca_key, hashes.SHA384())
        _write(keyf, _pem_key(key), private=True)
        _write(pem, cert.public_bytes(serialization.Encoding.PEM))
        return pem, keyf

    def superlink(self, hosts: list[str]) -> tuple[Path, Path]:
        return self.leaf(self.dir / "superlink", "ecufl superlink", hosts=hosts)

    def agent_server(self, board: str, host: str) -> tuple[Path, Path]:
        return self.leaf(self.dir / "agents" / board, f"ecufl agent {board}", hosts=[host])

    def agent_client(self) -> tuple[Path, Path]:
        return self.leaf(self.dir / "agent-client", "ecufl remote kernel", server=False, client=True)

    # --- SuperNode authentication keys (OpenSSH EC, as Flower reads them) -------------------------
    def node_key(self, board: str) -> tuple[Path, Path]:
        keyf, pub = self.dir / "nodes" / f"{board}.key", self.dir / "nodes" / f"{board}.pub"
        if keyf.is_file() and pub.is_file():
            return keyf, pub
        key = ec.generate_private_key(CURVE)
        _write(keyf, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()), private=True)
        _write(pub, key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
               + f" ecufl-{board}\n".encode())
        return keyf, pub
