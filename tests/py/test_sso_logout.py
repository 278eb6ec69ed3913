"""Logout through the official WorkOS Python SDK (workos 10.8): sso.authorize_logout and
sso.get_logout_url against a running idbridge, after a SAML login signed by pysaml2. Our
LogoutRequest goes to the IdP's SingleLogoutService signed with the connection's SP key (checked
here with `cryptography` against the certificate in our SP metadata); bad input gets the SDK's
errors. pysaml2's own XML-signed LogoutRequest over HTTP-POST is answered once; unsigned,
altered, foreign and replayed ones are refused. Run by tests/tests/sso_logout_sdk.rs; pysaml2 comes from $IDBRIDGE_PEERS_DIR (without it
the login tests are skipped).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import tempfile
import zlib
from pathlib import Path
from urllib.parse import parse_qs, unquote_plus, urlparse

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from workos import BadRequestError, NotFoundError, WorkOSClient

from test_sso import (  # the login helpers (pysaml2 as the IdP)
    API_KEY, BASE_URL, CALLBACK, CLIENT_ID, IDP_ENTITY, IDP_SSO, fetch, login, needs_pysaml2,
)

IDP_SLO = "https://pysaml2-idp.example.test/slo"
OPENAPI_CHECK = Path(__file__).resolve().parents[1] / "js" / "openapi_check.mjs"
TAG = secrets.token_hex(4)


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
             "-subj", "/CN=pysaml2-slo-idp", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )
        return {"key": key.read_text(), "cert": cert.read_text()}


def raw(method: str, path: str, body: dict | None = None):
    r = fetch(method, BASE_URL + path, body=json.dumps(body) if body is not None else None,
              headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    return r, (json.loads(r.text) if r.text.startswith("{") else None)


def validate(path: str, method: str, status: int, text: str) -> None:
    """The raw body against @workos/openapi-spec (tests/js/openapi_check.mjs)."""
    out = subprocess.run(["node", str(OPENAPI_CHECK), path, method, str(status)], input=text,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{method} {path} {status} vs the spec:\n{out.stderr}{out.stdout}"


def saml_connection(client, keys, slo: str | None) -> tuple[str, str]:
    org = client.organizations.create_organization(name=f"py SLO {TAG} {secrets.token_hex(2)}")
    opts = {"idp_entity_id": IDP_ENTITY, "idp_sso_url": IDP_SSO, "idp_signing_certs": [keys["cert"]]}
    if slo:
        opts["idp_slo_url"] = slo
    r, body = raw("POST", "/connections", {"organization_id": org.id, "connection_type": "GenericSAML",
                                           "saml_options": opts})
    assert r.status_code == 201, r.text
    return org.id, body["id"]


def profile_after_login(client, keys, conn_id: str, email: str):
    url = client.sso.get_authorization_url(connection=conn_id, redirect_uri=CALLBACK)
    code = login(client, keys, conn_id, email, url, None)
    return client.sso.get_profile_and_token(code=code).profile


def sp_signing_cert(conn_id: str) -> x509.Certificate:
    md = fetch("GET", f"{BASE_URL}/sso/saml/metadata/{conn_id}").text
    b64 = re.search(r'<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>([^<]+)<', md).group(1)
    return x509.load_der_x509_certificate(base64.b64decode(b64))


@needs_pysaml2
def test_authorize_logout_and_get_logout_url_send_a_signed_logout_request(client, idp_keys):
    _, conn_id = saml_connection(client, idp_keys, IDP_SLO)
    email = f"kj-{TAG}@example.com"
    profile = profile_after_login(client, idp_keys, conn_id, email)

    r, _ = raw("POST", "/sso/logout/authorize", {"profile_id": profile.id})
    assert r.status_code == 200, r.text
    validate("/sso/logout/authorize", "post", 200, r.text)
    auth = client.sso.authorize_logout(profile_id=profile.id)
    assert auth.logout_token
    assert auth.logout_url == client.sso.get_logout_url(token=auth.logout_token)

    r = fetch("GET", auth.logout_url)
    assert r.status_code == 302, r.text
    loc = r.headers["location"]
    assert loc.startswith(f"{IDP_SLO}?SAMLRequest="), loc
    query = urlparse(loc).query
    signed, signature = query.split("&Signature=")
    cert = sp_signing_cert(conn_id)
    cert.public_key().verify(base64.b64decode(unquote_plus(signature)), signed.encode(),
                             padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(InvalidSignature):
        cert.public_key().verify(base64.b64decode(unquote_plus(signature)), (signed + "x").encode(),
                                 padding.PKCS1v15(), hashes.SHA256())
    q = parse_qs(query)
    xml = zlib.decompress(base64.b64decode(q["SAMLRequest"][0]), -15).decode()
    assert f">{email}</saml:NameID>" in xml
    assert "<samlp:SessionIndex>" in xml
    assert f'Destination="{IDP_SLO}"' in xml

    # Single use: the same URL again is a 404 with a message.
    again = fetch("GET", auth.logout_url)
    assert again.status_code == 404
    assert json.loads(again.text)["message"]
    with pytest.raises(NotFoundError):
        client.sso.authorize_logout(profile_id=profile.id)


@needs_pysaml2
def test_logout_needs_a_connection_with_single_logout(client, idp_keys):
    _, conn_id = saml_connection(client, idp_keys, None)
    profile = profile_after_login(client, idp_keys, conn_id, f"noslo-{TAG}@example.com")
    with pytest.raises(BadRequestError):
        client.sso.authorize_logout(profile_id=profile.id)
    r, body = raw("POST", "/sso/logout/authorize", {"profile_id": profile.id})
    assert r.status_code == 400 and body["error"] == "connection_invalid", r.text
    validate("/sso/logout/authorize", "post", 400, r.text)


def test_logout_errors_through_the_sdk(client):
    with pytest.raises(NotFoundError):
        client.sso.authorize_logout(profile_id="prof_01HZZZZZZZZZZZZZZZZZZZZZZZ")
    r, _ = raw("POST", "/sso/logout/authorize", {"profile_id": "prof_01HZZZZZZZZZZZZZZZZZZZZZZZ"})
    assert r.status_code == 404
    validate("/sso/logout/authorize", "post", 404, r.text)
    r, body = raw("POST", "/sso/logout/authorize", {"profile_id": "prof_x", "return_to": "x"})
    assert r.status_code == 422 and "return_to" in r.text
    bad = fetch("GET", client.sso.get_logout_url(token="nope"))
    assert bad.status_code == 404
    assert json.loads(bad.text)["message"]
    validate("/sso/logout", "get", 404, bad.text)


PYSAML2_SLO = Path(__file__).resolve().parents[2] / "crates" / "saml" / "tests" / "peers" / "pysaml2_slo.py"


def pysaml2_logout_request(keys: dict, conn_id: str, sp_metadata: str, name_id: str) -> str:
    """pysaml2's signed IdP-initiated LogoutRequest for the HTTP-POST binding (base64 XML)."""
    from test_sso import PYSAML2

    cfg = {"idp": IDP_ENTITY, "idpKey": keys["key"], "idpCert": keys["cert"], "spMetadata": sp_metadata,
           "sp": f"{BASE_URL}/sso/saml/{conn_id}", "destination": f"{BASE_URL}/sso/saml/slo/{conn_id}",
           "nameId": name_id, "sessionIndex": "_py_session"}
    out = subprocess.run([str(PYSAML2), str(PYSAML2_SLO)], input=json.dumps(cfg),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["samlRequest"]


def post_form(url: str, field: str, value: str):
    from urllib.parse import urlencode

    return fetch("POST", url, body=urlencode({field: value}),
                 headers={"Content-Type": "application/x-www-form-urlencoded"})


@needs_pysaml2
def test_idp_initiated_logout_over_http_post_from_pysaml2(client, idp_keys):
    """pysaml2 posts its XML-signed LogoutRequest to the HTTP-POST SingleLogoutService our SP
    metadata publishes; we answer (signed, on HTTP-Redirect) once. Unsigned, altered,
    foreign-key and replayed requests are refused."""
    _, conn_id = saml_connection(client, idp_keys, IDP_SLO)
    endpoint = f"{BASE_URL}/sso/saml/slo/{conn_id}"
    md = fetch("GET", f"{BASE_URL}/sso/saml/metadata/{conn_id}").text
    assert (f'<md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" '
            f'Location="{endpoint}"/>') in md, md
    email = f"py-post-{TAG}@example.com"
    signed = pysaml2_logout_request(idp_keys, conn_id, md, email)
    xml = base64.b64decode(signed).decode()
    assert re.search(r"<(\w+:)?Signature[ >]", xml), xml

    unsigned = re.sub(r"<(\w+:)?Signature[ >].*?</\1Signature>", "", xml, flags=re.S)
    assert not re.search(r"<(\w+:)?Signature[ >]", unsigned)
    r = post_form(endpoint, "SAMLRequest", base64.b64encode(unsigned.encode()).decode())
    assert r.status_code == 400, r.text
    assert json.loads(r.text)["error"] == "invalid_logout_message"
    altered = xml.replace(email, f"x{email}")
    r = post_form(endpoint, "SAMLRequest", base64.b64encode(altered.encode()).decode())
    assert r.status_code == 400, "changed after signing"
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
                        "-subj", "/CN=attacker", "-keyout", f"{d}/k.pem", "-out", f"{d}/c.pem"],
                       check=True, capture_output=True)
        attacker = {"key": Path(d, "k.pem").read_text(), "cert": Path(d, "c.pem").read_text()}
    forged = pysaml2_logout_request(attacker, conn_id, md, email)
    assert post_form(endpoint, "SAMLRequest", forged).status_code == 400, "signed by an untrusted key"

    r = post_form(endpoint, "SAMLRequest", signed)
    assert r.status_code == 302, r.text
    assert r.headers["location"].startswith(f"{IDP_SLO}?SAMLResponse="), r.headers["location"]
    assert post_form(endpoint, "SAMLRequest", signed).status_code == 400, "replayed"
