"""The sandbox under Gradient's real names, for running Gradient's own extension against it.

The published extension calls fixed addresses (``https://api.gradient.network/api``,
``https://securetoken.googleapis.com/v1/token``, ``wss://wss.gradient.network:443/mqtt``) and
takes sessions only from pages on ``https://app.gradient.network``. A browser reaches the sandbox
under those names with Chromium's ``--host-resolver-rules`` (``SandboxServer.
host_resolver_rules()``) and a certificate from a local authority that the browser's user trusts
in their NSS database. Tests and benchmarks set this up for their own browsers; nothing in
GradientLab does it for a real fleet.
"""

from __future__ import annotations

import datetime
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .broker import TlsFiles
from .network import SandboxConfig
from .server import REAL_WEB_NAMES, SandboxServer

# The Chrome Web Store id of Gradient's extension (it follows from the `key` in its manifest).
REAL_EXTENSION_ID = "caacbgbklghmpodbdafajbgdnegacfmo"
REAL_NAMES = (*REAL_WEB_NAMES, "wss.gradient.network")
# The dashboard on its real origin (the sandbox serves its sign-in form under /app/ there too).
REAL_DASHBOARD_URL = "https://app.gradient.network/app/"
NSS_NICKNAME = "gradientlab-sandbox-ca"


@dataclass(frozen=True)
class Authority:
    """A throwaway certificate authority and the sandbox's certificate for the real names."""

    ca_pem: Path
    tls: TlsFiles


def make_authority(folder: Path, names: tuple[str, ...] = REAL_NAMES) -> Authority:
    """A new CA (valid two days) and a server certificate for ``names``, written to ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "GradientLab sandbox test CA")])
    usage = {
        "content_commitment": False,
        "key_encipherment": False,
        "data_encipherment": False,
        "key_agreement": False,
        "encipher_only": False,
        "decipher_only": False,
    }
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **usage),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_pem = folder / "ca.pem"
    ca_pem.write_bytes(ca.public_bytes(pem))
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
    keyfile.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    keyfile.chmod(0o600)
    return Authority(ca_pem=ca_pem, tls=TlsFiles(certfile, keyfile))


def trust_command(ca_pem_path: str) -> str:
    """Shell for the browser's user: trust the CA at ``ca_pem_path`` in ``~/.pki/nssdb`` (where
    Chromium on Linux reads the user's own authorities; certutil is Debian's libnss3-tools)."""
    db = '"sql:$HOME/.pki/nssdb"'
    ca = shlex.quote(ca_pem_path)
    return (
        'mkdir -p "$HOME/.pki/nssdb" && chmod 700 "$HOME/.pki" "$HOME/.pki/nssdb" && '
        f"{{ certutil -L -d {db} >/dev/null 2>&1 || certutil -N -d {db} --empty-password; }} && "
        f"certutil -A -d {db} -n {NSS_NICKNAME} -t C,, -i {ca}"
    )


def real_names_sandbox(
    extension_dir: Path, authority: Authority, config: SandboxConfig, **kwargs: Any
) -> SandboxServer:
    """A sandbox (not started) that serves ``extension_dir`` (Gradient's unpacked extension) as
    the store's CRX under the real id, answers to the real names over TLS, and takes the web
    API key the extension's bundle carries."""
    from gradientlab.gradient.webkey import find_web_api_key

    texts = [p.read_text(errors="replace") for p in sorted(extension_dir.glob("*.js"))]
    key = find_web_api_key(texts)
    if key is None:
        raise ValueError(f"no web API key in the bundle at {extension_dir}")
    return SandboxServer(
        config.model_copy(update={"api_key": key}),
        extension_id=REAL_EXTENSION_ID,
        tls=authority.tls,
        extension_dir=extension_dir,
        **kwargs,
    )
