"""TLS: a throwaway CA made with the openssl CLI (`CertificateAuthority`) and the server
certificates it issues (`ServerCert`)."""

from __future__ import annotations

import dataclasses
import os
import ssl
import subprocess
from pathlib import Path
from typing import Optional, Sequence

from .process import make_temp_dir, remove_temp_dir, run


@dataclasses.dataclass(frozen=True)
class ServerCert:
    """A server certificate and key (PEM files) and the CA that issued it."""

    cert_path: str
    key_path: str
    ca_path: str

    def client_context(self) -> ssl.SSLContext:
        """An SSLContext that trusts only the issuing CA (and checks the host name)."""
        return ssl.create_default_context(cafile=self.ca_path)


class CertificateAuthority:
    """A self-signed RSA CA in a fresh temp dir, made with `openssl req -x509`.

    `issue()` signs server certificates with IP and DNS subjectAltNames. The CA's own cert and
    key double as a JWT signing certificate for TokenServer (self-signed, so it is its own root).
    """

    def __init__(self, common_name: str = "regpin-test-ca", days: int = 2):
        self.dir = make_temp_dir("ca")
        self.cert_path = os.path.join(self.dir, "ca.pem")
        self.key_path = os.path.join(self.dir, "ca.key")
        self._serial = 0
        run([
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
            "-keyout", self.key_path, "-out", self.cert_path, "-days", str(days),
            "-subj", f"/CN={common_name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ])

    def cert_der(self) -> bytes:
        return ssl.PEM_cert_to_DER_cert(Path(self.cert_path).read_text())

    def issue(self, name: str, *, ips: Sequence[str] = ("127.0.0.1",), dns_names: Sequence[str] = (),
              days: int = 2, usages: Sequence[str] = ("serverAuth",),
              subject: Optional[str] = None) -> ServerCert:
        """A server certificate for `ips` and `dns_names` (subjectAltName), signed by this CA.
        `usages` are its extendedKeyUsage: ("clientAuth",) for a client certificate, both for
        a server that also dials itself (etcd's gateway). `subject` replaces the default
        "/CN=<first name>" (etcd refuses gateway requests whose client certificate has a CN
        while its auth is on: give such a certificate "/O=...")."""
        self._serial += 1
        key = os.path.join(self.dir, f"{name}.key")
        csr = os.path.join(self.dir, f"{name}.csr")
        cert = os.path.join(self.dir, f"{name}.pem")
        ext = os.path.join(self.dir, f"{name}.ext")
        sans = [f"IP:{ip}" for ip in ips] + [f"DNS:{d}" for d in dns_names]
        with open(ext, "w") as f:
            f.write(
                f"subjectAltName={','.join(sans)}\n"
                "basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                f"extendedKeyUsage={','.join(usages)}\n"
            )
        run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
             "-subj", subject or f"/CN={(list(ips) + list(dns_names))[0]}"])
        run(["openssl", "x509", "-req", "-sha256", "-in", csr, "-CA", self.cert_path, "-CAkey", self.key_path,
             "-set_serial", str(1000 + self._serial), "-out", cert, "-days", str(days), "-extfile", ext])
        return ServerCert(cert, key, self.cert_path)

    def sign_sha256_rsa(self, data: bytes) -> bytes:
        """RSASSA-PKCS1-v1_5 over SHA-256 with the CA key (`openssl dgst -sha256 -sign`): RS256."""
        result = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", self.key_path],
            input=data, capture_output=True, timeout=30, check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"openssl dgst -sign failed: {result.stderr.decode(errors='replace')}")
        return result.stdout

    def close(self) -> None:
        remove_temp_dir(self.dir)
