"""TLS material and SuperNode keys for a federation, made with the ``cryptography`` package.

``make_tls`` creates a private certificate authority and a server certificate for the SuperLink (subjectAltName
``localhost`` and ``127.0.0.1`` plus any extra names), ``make_supernode_keys`` an EC P-384 key pair per site in
OpenSSH format, which is what ``flower-supernode --auth-supernode-private-key`` and ``flwr supernode register``
read. Private keys are written with mode 0600 and never overwritten silently.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from infrabrain.atomic import atomic_write_bytes
from infrabrain.logs import get_logger

log = get_logger("coordinator.certs")

DEFAULT_SANS: tuple[str, ...] = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the CA certificate and the SuperLink's certificate and key (PEM)."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class SupernodeKey:
    """Paths of one SuperNode's OpenSSH EC private key and its ``.pub`` public key."""

    private_key: Path
    public_key: Path


def _validate_days(days: int) -> int:
    if not isinstance(days, int) or days <= 0 or days > 3650:
        raise ValueError(f"days must be an integer in 1..3650, got {days!r}")
    return days


def _write_private(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data)
    os.chmod(path, 0o600)


def _san_entries(names: tuple[str, ...]) -> list:
    from cryptography import x509

    entries: list = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            if not name or any(c.isspace() for c in name):
                raise ValueError(f"subject alternative name {name!r} is neither an IP address nor a DNS name")
            entries.append(x509.DNSName(name))
    return entries


def make_tls(out_dir: str | os.PathLike[str], sans: tuple[str, ...] = DEFAULT_SANS, days: int = 365,
             overwrite: bool = False) -> TlsFiles:
    """Create ``ca.crt``/``ca.key`` and ``server.pem``/``server.key`` under ``out_dir``.

    The server certificate is signed by the CA and valid for ``sans`` (DNS names or IP addresses). Refuses to
    replace existing files unless ``overwrite`` is true, so a running federation's CA is never lost by accident.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    _validate_days(days)
    if not sans:
        raise ValueError("sans must name at least one host (for example localhost, 127.0.0.1)")
    out = Path(out_dir)
    files = TlsFiles(out / "ca.crt", out / "ca.key", out / "server.pem", out / "server.key")
    existing = [str(p) for p in (files.ca_cert, files.ca_key, files.server_cert, files.server_key) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"TLS files already exist: {', '.join(existing)} (pass overwrite to replace them)")
    out.mkdir(parents=True, exist_ok=True)

    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "infrabrain federation CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(_san_entries(tuple(sans))), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    nopass = serialization.NoEncryption()
    _write_private(files.ca_key, ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, nopass))
    atomic_write_bytes(files.ca_cert, ca_cert.public_bytes(pem))
    _write_private(files.server_key, server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, nopass))
    atomic_write_bytes(files.server_cert, server_cert.public_bytes(pem))
    log.info("tls material written", extra={"dir": str(out), "sans": ",".join(sans), "days": days})
    return files


def make_supernode_keys(out_dir: str | os.PathLike[str], name: str, overwrite: bool = False) -> SupernodeKey:
    """Create an EC P-384 key pair ``<name>`` / ``<name>.pub`` (OpenSSH format) for SuperNode authentication."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise ValueError(f"key name {name!r} must be non-empty and use only letters, digits, '-', '_', '.'")
    out = Path(out_dir)
    key = SupernodeKey(out / name, out / f"{name}.pub")
    if (key.private_key.exists() or key.public_key.exists()) and not overwrite:
        raise FileExistsError(f"SuperNode key {str(key.private_key)!r} already exists (pass overwrite to replace it)")
    priv = ec.generate_private_key(ec.SECP384R1())
    _write_private(key.private_key, priv.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.OpenSSH,
                                                       serialization.NoEncryption()))
    pub = priv.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    atomic_write_bytes(key.public_key, pub + f" infrabrain-{name}\n".encode())
    return key


def verify_server_cert(files: TlsFiles) -> list[str]:
    """Return the subjectAltNames of the server certificate after checking it was signed by the CA."""
    from cryptography import x509

    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in san.get_values_for_type(x509.DNSName)] + [
        str(v) for v in san.get_values_for_type(x509.IPAddress)]
