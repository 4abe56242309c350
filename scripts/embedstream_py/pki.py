"""Make a throw-away PKI for the TLS cross-checks with the openssl CLI.

    python -m embedstream_py.pki DIR

Writes into DIR: ca.pem/ca.key (a CA), server.pem/server.key (signed by it,
for DNS:localhost and IP:127.0.0.1, serverAuth) and client.pem/client.key
(clientAuth, for mutual TLS). ECDSA P-256, valid for two days. Standard
library only; needs `openssl` on PATH.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

DAYS = "2"


def openssl(*args: str) -> None:
    r = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"openssl {' '.join(args[:2])} failed: {r.stderr.strip()}")


def leaf(out: Path, name: str, subject: str, ext: str) -> None:
    key, csr, pem = out / f"{name}.key", out / f"{name}.csr", out / f"{name}.pem"
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", subject)
    with tempfile.NamedTemporaryFile("w", suffix=".ext", dir=out, delete=False) as f:
        f.write(ext)
    try:
        openssl("x509", "-req", "-in", str(csr), "-CA", str(out / "ca.pem"), "-CAkey",
                str(out / "ca.key"), "-CAcreateserial", "-out", str(pem), "-days", DAYS,
                "-extfile", f.name)
    finally:
        Path(f.name).unlink()
        csr.unlink()


def make(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(out / "ca.key"), "-out", str(out / "ca.pem"), "-days", DAYS,
            "-subj", "/CN=embedstream check CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    leaf(out, "server", "/CN=localhost",
         "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
         "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n")
    leaf(out, "client", "/CN=embedstream check client",
         "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n"
         "keyUsage=critical,digitalSignature\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    make(Path(sys.argv[1]))
    print(f"PKI written to {sys.argv[1]}: ca.pem, server.pem/.key, client.pem/.key")
