"""The SAML certificate sub-resources of a connection through the official WorkOS Python SDK
(workos 10.8): IdP signing certificates (list, create from PEM, delete; bad PEM, not a
certificate, expired, duplicate and last-certificate refusals), SP encryption certificates
(list, create, delete) and the SP signing certificate (get, create, delete). Neither
@workos/openapi-spec nor the Node SDK defines these operations, so each raw body is checked
against the Python SDK's own models (their from_dict requires every field). Run by
tests/tests/connections_state_sdk.rs; needs IDBRIDGE_URL, IDBRIDGE_API_KEY, IDBRIDGE_CLIENT_ID.
"""

from __future__ import annotations

import datetime
import os
import secrets

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from workos import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    UnprocessableEntityError,
    WorkOSClient,
)
from workos.sso._resource import CreateProtocolOptionsSAML
from workos.sso.models.create_connection_saml_options import CreateConnectionSAMLOptions
from workos.sso.models.saml_idp_signing_certificate import SAMLIdpSigningCertificate
from workos.sso.models.saml_idp_signing_certificate_list import SAMLIdpSigningCertificateList
from workos.sso.models.saml_sp_encryption_certificate_list import (
    SAMLSpEncryptionCertificateList,
)
from workos.sso.models.saml_sp_signing_certificate import SAMLSpSigningCertificate

BASE_URL = os.environ["IDBRIDGE_URL"]
API_KEY = os.environ["IDBRIDGE_API_KEY"]
CLIENT_ID = os.environ["IDBRIDGE_CLIENT_ID"]
TAG = secrets.token_hex(4)
FIELDS = {"object", "id", "value", "not_before", "not_after", "created_at"}


@pytest.fixture(scope="module")
def client() -> WorkOSClient:
    return WorkOSClient(api_key=API_KEY, client_id=CLIENT_ID, base_url=BASE_URL, max_retries=0)


def make_cert(days_from: int = -1, days_to: int = 30, bits: int = 2048) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"py-idp-{TAG}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days_from))
        .not_valid_after(now + datetime.timedelta(days=days_to))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def raw(method: str, path: str, body: dict | None = None) -> httpx2.Response:
    return httpx2.request(
        method,
        f"{BASE_URL}{path}",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
        trust_env=False,
    )


def test_connection_saml_certificates(client: WorkOSClient) -> None:
    org = client.organizations.create_organization(name=f"py certs {TAG}")
    first_pem = make_cert()
    conn = client.sso.create_connection(
        organization_id=org.id,
        name=f"py certs {TAG}",
        connection_type="GenericSAML",
        protocol_options=CreateProtocolOptionsSAML(
            saml_options=CreateConnectionSAMLOptions(
                idp_entity_id=f"https://py-idp.example.test/certs/{TAG}",
                idp_sso_url="https://py-idp.example.test/sso",
                idp_signing_certs=[first_pem],
            )
        ),
    )
    base = f"/connections/{conn.id}"

    # IdP signing certificates.
    idp = client.sso.list_connection_saml_idp_signing_certs(conn.id)
    assert [c.value.strip() for c in idp.data] == [first_pem.strip()]
    first = idp.data[0]
    assert first.not_after is not None and first.not_after > datetime.datetime.now(datetime.timezone.utc)
    r = raw("GET", f"{base}/saml_idp_signing_certs")
    assert r.status_code == 200, r.text
    assert set(r.json()["data"][0]) == FIELDS
    assert SAMLIdpSigningCertificateList.from_dict(r.json()).data[0].id == first.id

    for bad in [
        "not a certificate",
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        make_cert(days_from=-10, days_to=-1),
        make_cert(bits=1024),
    ]:
        with pytest.raises(UnprocessableEntityError):
            client.sso.create_connection_saml_idp_signing_cert(conn.id, value=bad)
    r = raw("POST", f"{base}/saml_idp_signing_certs", {"value": make_cert(days_from=-10, days_to=-1)})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0] == {
        "field": "value",
        "code": "certificate_expired",
        "message": r.json()["errors"][0]["message"],
    }
    r = raw("POST", f"{base}/saml_idp_signing_certs", {"value": first_pem, "extra": 1})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "extra", r.text
    with pytest.raises(ConflictError):
        client.sso.create_connection_saml_idp_signing_cert(conn.id, value=first_pem)
    assert len(client.sso.list_connection_saml_idp_signing_certs(conn.id).data) == 1

    second_pem = make_cert(days_to=400)
    second = client.sso.create_connection_saml_idp_signing_cert(conn.id, value=second_pem)
    assert isinstance(second, SAMLIdpSigningCertificate)
    assert second.object == "saml_idp_signing_certificate"
    assert [c.id for c in client.sso.list_connection_saml_idp_signing_certs(conn.id).data] == [
        first.id,
        second.id,
    ]
    client.sso.delete_connection_saml_idp_signing_cert(conn.id, first.id)
    with pytest.raises(NotFoundError):
        client.sso.delete_connection_saml_idp_signing_cert(conn.id, first.id)
    with pytest.raises(BadRequestError):
        client.sso.delete_connection_saml_idp_signing_cert(conn.id, second.id)
    assert [c.id for c in client.sso.list_connection_saml_idp_signing_certs(conn.id).data] == [second.id]

    # SP encryption certificates.
    enc = client.sso.list_connection_saml_sp_encryption_certs(conn.id)
    assert len(enc.data) == 1 and enc.data[0].object == "saml_sp_encryption_certificate"
    added = client.sso.create_connection_saml_sp_encryption_cert(conn.id)
    assert added.value.startswith("-----BEGIN CERTIFICATE-----")
    with pytest.raises(ConflictError):
        client.sso.create_connection_saml_sp_encryption_cert(conn.id)
    r = raw("GET", f"{base}/saml_sp_encryption_certs")
    assert [set(c) for c in r.json()["data"]] == [FIELDS, FIELDS], r.text
    assert [c.id for c in SAMLSpEncryptionCertificateList.from_dict(r.json()).data] == [
        enc.data[0].id,
        added.id,
    ]
    client.sso.delete_connection_saml_sp_encryption_cert(conn.id, enc.data[0].id)
    assert [c.id for c in client.sso.list_connection_saml_sp_encryption_certs(conn.id).data] == [added.id]

    # The SP signing certificate.
    signing = client.sso.list_connection_saml_sp_signing_cert(conn.id)
    assert signing.object == "saml_sp_signing_certificate"
    r = raw("GET", f"{base}/saml_sp_signing_cert")
    assert set(r.json()) == FIELDS and SAMLSpSigningCertificate.from_dict(r.json()).id == signing.id
    with pytest.raises(ConflictError):
        client.sso.create_connection_saml_sp_signing_cert(conn.id)
    client.sso.delete_connection_saml_sp_signing_cert(conn.id, signing.id)
    with pytest.raises(NotFoundError):
        client.sso.list_connection_saml_sp_signing_cert(conn.id)
    replaced = client.sso.create_connection_saml_sp_signing_cert(conn.id)
    assert replaced.id != signing.id
    assert client.sso.list_connection_saml_sp_signing_cert(conn.id).id == replaced.id
    metadata = httpx2.get(f"{BASE_URL}/sso/saml/metadata/{conn.id}", trust_env=False).text
    body = "".join(replaced.value.strip().splitlines()[1:-1])
    assert body in metadata

    client.sso.delete_connection(conn.id)
    with pytest.raises(NotFoundError):
        client.sso.list_connection_saml_idp_signing_certs(conn.id)
