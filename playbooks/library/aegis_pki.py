"""Ansible module ``aegis_pki``: the cluster's CA and its certificates on the controller, made only where missing.

Runs on the controller (``delegate_to: localhost``) with ansible-core's own ``cryptography``. Files in ``dir``:
``ca.pem``/``ca.key``, ``server-<name>.pem``/``.key`` per NATS node (its addresses as subject alternative names,
server and client use: the routes authenticate each other with them) and ``<user>.pem``/``.key`` per NATS user
(mutual TLS). Keys are 0600. A server certificate whose names no longer match the inventory is issued again;
nothing else that exists is touched, so an operator's own CA and certificates placed there are used as they are.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: aegis_pki
short_description: Make the Aegis cluster's CA and certificates where missing (controller side)
options:
  dir: {description: Directory of the PKI files (created 0700)., type: path, required: true}
  ca_name: {description: Common name of the CA., type: str, required: true}
  servers:
    description: NATS nodes, name -> address (an IP or DNS name); the name is a subject alternative name too.
    type: dict
    default: {}
  users: {description: NATS users that get a client certificate., type: list, elements: str, default: []}
  days: {description: Validity of issued certificates in days., type: int, default: 825}
"""


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "dir": {"type": "path", "required": True},
            "ca_name": {"type": "str", "required": True},
            "servers": {"type": "dict", "default": {}},
            "users": {"type": "list", "elements": "str", "default": []},
            "days": {"type": "int", "default": 825},
        },
        supports_check_mode=True,
    )
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    base = Path(module.params["dir"])
    days = module.params["days"]
    made: list[str] = []
    now = datetime.datetime.now(datetime.UTC)

    def new_key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def san_of(addresses: list[str]) -> list[x509.GeneralName]:
        out: list[x509.GeneralName] = []
        for a in addresses:
            try:
                out.append(x509.IPAddress(ipaddress.ip_address(a)))
            except ValueError:
                out.append(x509.DNSName(a))
        return out

    ca_cert_path, ca_key_path = base / "ca.pem", base / "ca.key"
    if not ca_cert_path.is_file():
        made.append(str(ca_cert_path))
        if not module.check_mode:
            base.mkdir(parents=True, exist_ok=True)
            os.chmod(base, 0o700)
            key = new_key()
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, module.params["ca_name"])])
            cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
                )
                .sign(key, hashes.SHA256())
            )
            _write(ca_key_path, key_pem(key), 0o600)
            _write(ca_cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    elif not ca_key_path.is_file():
        module.fail_json(msg=f"{ca_cert_path} exists but {ca_key_path} does not: the CA cannot sign")

    def issue(stem: str, common_name: str, sans: list[x509.GeneralName]) -> None:
        cert_path, key_path = base / f"{stem}.pem", base / f"{stem}.key"
        if cert_path.is_file() and key_path.is_file():
            current = x509.load_pem_x509_certificate(cert_path.read_bytes())
            try:
                have = set(current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
            except x509.ExtensionNotFound:
                have = set()
            if have == set(sans):
                return
        made.append(str(cert_path))
        if module.check_mode:
            return
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        key = new_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write(key_path, key_pem(key), 0o600)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)

    for name, address in module.params["servers"].items():
        addresses = [address] if isinstance(address, str) else list(address or [])
        if not addresses:
            module.fail_json(msg=f"aegis_pki: server {name!r} has no address")
        issue(f"server-{name}", name, san_of([*addresses, *([name] if name not in addresses else [])]))
    for user in module.params["users"]:
        issue(user, user, [x509.DNSName(f"{user}.users.aegis.local")])
    module.exit_json(changed=bool(made), made=made)


if __name__ == "__main__":
    main()
