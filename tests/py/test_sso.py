"""SSO end to end through the official WorkOS Python SDK (workos 10.8) with pysaml2 as the IdP.

create_connection (py10 shape) → get_authorization_url → follow the redirect → pysaml2 signs
a response (via xmlsec1) → POST it to our ACS → code → get_profile_and_token → get_profile.
Run by tests/tests/sso_sdk.rs; needs IDBRIDGE_URL, IDBRIDGE_API_KEY, IDBRIDGE_CLIENT_ID and
IDBRIDGE_SSO_CALLBACK. pysaml2 lives in $IDBRIDGE_PEERS_DIR/pysaml2-venv
(scripts/test-deps.d/saml.sh); without it the login tests are skipped.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import tempfile
import zlib
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import http.client
import pytest
from workos import BadRequestError, WorkOSClient
from workos.sso._resource import CreateProtocolOptionsOIDC, CreateProtocolOptionsSAML
from workos.sso.models.create_connection_attribute_maps import CreateConnectionAttributeMaps
from workos.sso.models.create_connection_oidc_options import CreateConnectionOIDCOptions
from workos.sso.models.create_connection_saml_options import CreateConnectionSAMLOptions
from workos.sso.models.create_connection_standard_attributes import (
    CreateConnectionStandardAttributes,
)

BASE_URL = os.environ["IDBRIDGE_URL"]
API_KEY = os.environ["IDBRIDGE_API_KEY"]
CLIENT_ID = os.environ["IDBRIDGE_CLIENT_ID"]
CALLBACK = os.environ["IDBRIDGE_SSO_CALLBACK"]

REPO = Path(__file__).resolve().parents[2]
PEERS = Path(os.environ.get("IDBRIDGE_PEERS_DIR", "/var/cache/idbridge-peers"))
PYSAML2 = PEERS / "pysaml2-venv" / "bin" / "python"
PYSAML2_SCRIPT = REPO / "crates" / "saml" / "tests" / "peers" / "pysaml2_idp.py"
HAVE_PYSAML2 = PYSAML2.exists() and PYSAML2_SCRIPT.exists()
needs_pysaml2 = pytest.mark.skipif(not HAVE_PYSAML2, reason="pysaml2 not installed")

IDP_ENTITY = "https://pysaml2-idp.example.test/metadata"
IDP_SSO = "https://pysaml2-idp.example.test/sso"
TAG = secrets.token_hex(4)
# pysaml2 renames `firstName` to the eIDAS attribute URI on the wire: the connection's
# attribute map (py10 `attribute_maps`) points first_name at it.
EIDAS_GIVEN_NAME = "http://eidas.europa.eu/attributes/naturalperson/CurrentGivenName"


@pytest.fixture(scope="module")
def client() -> WorkOSClient:
    return WorkOSClient(api_key=API_KEY, client_id=CLIENT_ID, base_url=BASE_URL, max_retries=0)


@pytest.fixture(scope="module")
def idp_keys():
    """A throwaway IdP key pair for this run (never committed)."""
    with tempfile.TemporaryDirectory() as d:
        key, cert = Path(d, "key.pem"), Path(d, "cert.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
             "-subj", "/CN=pysaml2-idp", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )
        return {"key": key.read_text(), "cert": cert.read_text()}


@pytest.fixture(scope="module")
def setup(client, idp_keys):
    org = client.organizations.create_organization(name=f"py SSO {TAG}")
    conn = client.sso.create_connection(
        organization_id=org.id,
        name=f"pysaml2 {TAG}",
        external_id=f"py-{TAG}",
        connection_type="GenericSAML",
        attribute_maps=CreateConnectionAttributeMaps(
            standard_attributes=CreateConnectionStandardAttributes(first_name=EIDAS_GIVEN_NAME),
            custom_attributes={"team": "groups"},
        ),
        protocol_options=CreateProtocolOptionsSAML(
            saml_options=CreateConnectionSAMLOptions(
                idp_entity_id=IDP_ENTITY,
                idp_sso_url=IDP_SSO,
                idp_signing_certs=[idp_keys["cert"]],
            )
        ),
    )
    return org, conn


class Resp:
    def __init__(self, status: int, headers, text: str):
        self.status_code = status
        self.headers = headers
        self.text = text


def fetch(method: str, url: str, body: str | None = None, headers: dict | None = None) -> Resp:
    """One request, redirects not followed (the stdlib only; the browser is simulated)."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        path = u.path + (f"?{u.query}" if u.query else "")
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode("utf-8", "replace"))
    finally:
        conn.close()


def start_login(url: str):
    r = fetch("GET", url)
    assert r.status_code == 302, r.text
    loc = urlparse(r.headers["location"])
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == IDP_SSO
    q = parse_qs(loc.query)
    xml = zlib.decompress(base64.b64decode(q["SAMLRequest"][0]), -15).decode()
    req_id = re.search(r'\sID="([^"]+)"', xml).group(1)
    cookie = r.headers["set-cookie"].split(";")[0]
    return req_id, q["RelayState"][0], cookie


def pysaml2_response(keys, conn_id: str, req_id: str, email: str, attributes: dict | None = None) -> str:
    metadata = fetch("GET", f"{BASE_URL}/sso/saml/metadata/{conn_id}")
    assert metadata.status_code == 200
    cfg = {
        "idp": IDP_ENTITY,
        "idpKey": keys["key"],
        "idpCert": keys["cert"],
        "spMetadata": metadata.text,
        "encrypt": False,
        "sp": f"{BASE_URL}/sso/saml/{conn_id}",
        "acs": f"{BASE_URL}/sso/saml/acs/{conn_id}",
        "reqId": req_id,
        "user": email,
        "signMessage": True,
        "signAssertion": True,
        "attributes": attributes or {
            "id": [f"py-{email}"],
            "email": [email],
            "firstName": ["Katherine"],
            "lastName": ["Johnson"],
            "groups": ["NASA"],
        },
    }
    out = subprocess.run([str(PYSAML2), str(PYSAML2_SCRIPT)], input=json.dumps(cfg),
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def login(client, keys, conn_id: str, email: str, url: str, state: str | None, attributes: dict | None = None):
    req_id, relay, cookie = start_login(url)
    saml = pysaml2_response(keys, conn_id, req_id, email, attributes)
    r = fetch(
        "POST",
        f"{BASE_URL}/sso/saml/acs/{conn_id}",
        body=urlencode({"SAMLResponse": saml, "RelayState": relay}),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie},
    )
    assert r.status_code == 302, r.text
    back = urlparse(r.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == CALLBACK
    q = parse_qs(back.query)
    assert "error" not in q, q
    if state is not None:
        assert q["state"] == [state]
    return q["code"][0]


def test_create_connection_py10_shape_is_idempotent_on_external_id(client, setup, idp_keys):
    org, conn = setup
    assert conn.id.startswith("conn_")
    assert conn.organization_id == org.id
    assert str(conn.connection_type.value) == "GenericSAML"
    again = client.sso.create_connection(
        organization_id=org.id,
        external_id=f"py-{TAG}",
        protocol_options=CreateProtocolOptionsSAML(
            saml_options=CreateConnectionSAMLOptions(
                idp_entity_id=IDP_ENTITY, idp_sso_url=IDP_SSO, idp_signing_certs=[idp_keys["cert"]]
            )
        ),
    )
    assert again.id == conn.id
    assert client.sso.get_connection(conn.id).id == conn.id
    listed = client.sso.list_connections(organization_id=org.id)
    assert [c.id for c in listed.data] == [conn.id]


def test_oidc_connection_secret_never_returned(client, setup):
    org, _ = setup
    secret = f"oidc-secret-{TAG}"
    conn = client.sso.create_connection(
        organization_id=org.id,
        connection_type="GenericOIDC",
        protocol_options=CreateProtocolOptionsOIDC(
            oidc_options=CreateConnectionOIDCOptions(
                discovery_endpoint="https://op.example.test/.well-known/openid-configuration",
                client_id="py-client",
                client_secret=secret,
            )
        ),
    )
    raw = fetch("GET", f"{BASE_URL}/connections/{conn.id}", headers={"Authorization": f"Bearer {API_KEY}"})
    assert raw.status_code == 200
    assert secret not in raw.text
    client.sso.delete_connection(conn.id)


@needs_pysaml2
def test_saml_login_with_pysaml2(client, setup, idp_keys):
    org, conn = setup
    url = client.sso.get_authorization_url(connection=conn.id, redirect_uri=CALLBACK, state="py-state")
    email = f"katherine-{TAG}@example.com"
    code = login(client, idp_keys, conn.id, email, url, "py-state")
    resp = client.sso.get_profile_and_token(code=code)
    assert resp.token_type == "Bearer"
    assert resp.expires_in > 0
    p = resp.profile
    assert p.id.startswith("prof_")
    assert p.email == email
    assert p.first_name == "Katherine"
    assert p.last_name == "Johnson"
    assert p.name == "Katherine Johnson"
    assert p.idp_id == f"py-{email}"
    assert p.connection_id == conn.id
    assert p.organization_id == org.id
    assert p.raw_attributes == {}
    assert p.groups == ["NASA"]
    assert p.custom_attributes == {"team": "NASA"}
    again = client.sso.get_profile(access_token=resp.access_token)
    assert again.id == p.id
    with pytest.raises(BadRequestError):
        client.sso.get_profile_and_token(code=code)


@needs_pysaml2
def test_saml_login_with_pkce(client, setup, idp_keys):
    _, conn = setup
    started = client.sso.get_authorization_url_with_pkce(connection=conn.id, redirect_uri=CALLBACK)
    email = f"pkce-{TAG}@example.com"
    code = login(client, idp_keys, conn.id, email, started["url"], started["state"])
    resp = client.sso.get_profile_and_token_pkce(code=code, code_verifier=started["code_verifier"])
    assert resp.profile.email == email


@needs_pysaml2
def test_saml_login_with_pysaml2_default_attribute_names(client, idp_keys):
    """Issue 19: pysaml2 sends its default names (urn:oid Names with FriendlyNames mail,
    givenName, sn); with no attribute map at all, email and names come from the attributes, not
    from the NameID (which here is another address on purpose)."""
    org = client.organizations.create_organization(name=f"py default names {TAG}")
    conn = client.sso.create_connection(
        organization_id=org.id,
        name=f"pysaml2 defaults {TAG}",
        protocol_options=CreateProtocolOptionsSAML(
            saml_options=CreateConnectionSAMLOptions(
                idp_entity_id=IDP_ENTITY, idp_sso_url=IDP_SSO, idp_signing_certs=[idp_keys["cert"]]
            )
        ),
    )
    url = client.sso.get_authorization_url(connection=conn.id, redirect_uri=CALLBACK, state="py-defaults")
    name_id = f"nameid-{TAG}@example.com"
    mail = f"ada-{TAG}@example.com"
    attributes = {"mail": [mail], "givenName": ["Ada"], "sn": ["Lovelace"], "uid": [f"ada-{TAG}"]}
    code = login(client, idp_keys, conn.id, name_id, url, "py-defaults", attributes)
    p = client.sso.get_profile_and_token(code=code).profile
    assert p.email == mail
    assert p.first_name == "Ada"
    assert p.last_name == "Lovelace"
    assert p.name == "Ada Lovelace"
    client.sso.delete_connection(conn.id)
