"""Issue 19 through the official WorkOS Python SDK (workos 10.8): an OIDC connection created
with `attribute_maps.custom_attributes` returns those custom attributes in the profile.

The OpenID Provider is a first idbridge (A, directory mode against slapd); the connection is on a
second idbridge (B, IDBRIDGE_URL). Run by tests/tests/idp_e2e.rs, which registers B's callback
as an OIDC client at A and passes its credentials. The browser is simulated over plain HTTP.
"""

from __future__ import annotations

import http.client
import os
import re
from html import unescape
from urllib.parse import parse_qs, urlencode, urljoin, urlparse

from workos import WorkOSClient
from workos.sso._resource import CreateProtocolOptionsOIDC
from workos.sso.models.create_connection_attribute_maps import CreateConnectionAttributeMaps
from workos.sso.models.create_connection_oidc_options import CreateConnectionOIDCOptions

BASE_URL = os.environ["IDBRIDGE_URL"]
API_KEY = os.environ["IDBRIDGE_API_KEY"]
CLIENT_ID = os.environ["IDBRIDGE_CLIENT_ID"]
CALLBACK = os.environ["IDBRIDGE_SSO_CALLBACK"]
ORG = os.environ["IDBRIDGE_ORG_ID"]
ISSUER = os.environ["IDBRIDGE_OP_ISSUER"]
OP_CLIENT_ID = os.environ["IDBRIDGE_OP_CLIENT_ID"]
OP_CLIENT_SECRET = os.environ["IDBRIDGE_OP_CLIENT_SECRET"]
LOGIN = os.environ["IDBRIDGE_OP_LOGIN"]
PASSWORD = os.environ["IDBRIDGE_OP_PASSWORD"]


def fetch(method: str, url: str, body: str | None = None, headers: dict | None = None):
    """One request, redirects not followed: (status, location, cookies, text)."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request(method, u.path + (f"?{u.query}" if u.query else ""), body=body, headers=headers or {})
        r = conn.getresponse()
        cookies = [v.split(";")[0] for k, v in r.getheaders() if k.lower() == "set-cookie"]
        return r.status, r.getheader("location"), cookies, r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def field(html: str, name: str) -> str:
    m = re.search(f'name="{name}" value="([^"]*)"', html)
    assert m, f"no {name} on the login page: {html}"
    return unescape(m.group(1))


def test_oidc_connection_custom_attributes_from_attribute_maps():
    client = WorkOSClient(api_key=API_KEY, client_id=CLIENT_ID, base_url=BASE_URL, max_retries=0)
    conn = client.sso.create_connection(
        organization_id=ORG,
        name="idbridge A (OIDC, attribute_maps)",
        connection_type="GenericOIDC",
        attribute_maps=CreateConnectionAttributeMaps(
            custom_attributes={"display_name": "name", "work_email": "email"},
        ),
        protocol_options=CreateProtocolOptionsOIDC(
            oidc_options=CreateConnectionOIDCOptions(
                discovery_endpoint=f"{ISSUER}/.well-known/openid-configuration",
                client_id=OP_CLIENT_ID,
                client_secret=OP_CLIENT_SECRET,
            )
        ),
    )
    url = client.sso.get_authorization_url(connection=conn.id, redirect_uri=CALLBACK, state="py-oidc")
    status, to_op, b_cookies, _ = fetch("GET", url)
    assert status == 302 and to_op.startswith(f"{ISSUER}/authorize?"), (status, to_op)
    status, _, a_cookies, page = fetch("GET", to_op)
    assert status == 200, page
    action = re.search(r'action="([^"]*)"', page).group(1)
    status, back, _, text = fetch(
        "POST",
        urljoin(to_op, unescape(action)),
        body=urlencode({"k": field(page, "k"), "csrf": field(page, "csrf"), "login": LOGIN, "password": PASSWORD}),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": "; ".join(a_cookies)},
    )
    assert status == 303, text
    status, to_app, _, text = fetch("GET", back, headers={"Cookie": "; ".join(b_cookies)})
    assert status == 302, text
    q = parse_qs(urlparse(to_app).query)
    assert "error" not in q, q
    assert q["state"] == ["py-oidc"]
    p = client.sso.get_profile_and_token(code=q["code"][0]).profile
    assert p.connection_id == conn.id
    assert p.email == "alice@example.test"
    assert p.custom_attributes == {"display_name": "Alice Archer", "work_email": "alice@example.test"}
    client.sso.delete_connection(conn.id)
