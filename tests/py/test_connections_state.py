"""Connection PATCH through the official WorkOS Python SDK (workos 10.8): update_connection
renames (and refuses what it cannot change), `{"state": "inactive"|"active"}` (raw: the SDK has
no state parameter) deactivates and reactivates, delete_connection removes it. Run by
tests/tests/connections_state_sdk.rs; needs IDBRIDGE_URL, IDBRIDGE_API_KEY,
IDBRIDGE_CLIENT_ID and IDBRIDGE_SSO_CALLBACK.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx2
import pytest
from workos import NotFoundError, UnprocessableEntityError, WorkOSClient
from workos.sso._resource import CreateProtocolOptionsSAML
from workos.sso.models.create_connection_saml_options import CreateConnectionSAMLOptions

BASE_URL = os.environ["IDBRIDGE_URL"]
API_KEY = os.environ["IDBRIDGE_API_KEY"]
CLIENT_ID = os.environ["IDBRIDGE_CLIENT_ID"]
CALLBACK = os.environ["IDBRIDGE_SSO_CALLBACK"]
TAG = secrets.token_hex(4)
IDP_SSO = "https://py-idp.example.test/sso"


@pytest.fixture(scope="module")
def client() -> WorkOSClient:
    return WorkOSClient(api_key=API_KEY, client_id=CLIENT_ID, base_url=BASE_URL, max_retries=0)


def cert() -> str:
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
             "-subj", "/CN=py-idp", "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem"],
            check=True, capture_output=True,
        )
        return Path(d, "cert.pem").read_text()


def patch(conn_id: str, body: dict) -> httpx2.Response:
    return httpx2.patch(
        f"{BASE_URL}/connections/{conn_id}",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
        trust_env=False,
    )


def authorize_target(client: WorkOSClient, conn_id: str) -> str:
    url = client.sso.get_authorization_url(redirect_uri=CALLBACK, connection=conn_id, state="py")
    r = httpx2.get(url, follow_redirects=False, trust_env=False)
    assert r.status_code == 302, r.text
    return r.headers["location"]


def test_update_connection_state_and_delete(client: WorkOSClient) -> None:
    org = client.organizations.create_organization(name=f"py conn {TAG}")
    conn = client.sso.create_connection(
        organization_id=org.id,
        name=f"py idp {TAG}",
        connection_type="GenericSAML",
        protocol_options=CreateProtocolOptionsSAML(
            saml_options=CreateConnectionSAMLOptions(
                idp_entity_id=f"https://py-idp.example.test/{TAG}",
                idp_sso_url=IDP_SSO,
                idp_signing_certs=[cert()],
            )
        ),
    )
    renamed = client.sso.update_connection(conn.id, name=f"py renamed {TAG}", external_id=f"py-ext-{TAG}")
    assert renamed.name == f"py renamed {TAG}"
    assert client.sso.get_connection(conn.id).name == f"py renamed {TAG}"
    with pytest.raises(UnprocessableEntityError):
        client.sso.update_connection(conn.id, connection_type="OktaSAML")

    assert authorize_target(client, conn.id).startswith(IDP_SSO)
    r = patch(conn.id, {"state": "inactive"})
    assert r.status_code == 200, r.text
    assert str(client.sso.get_connection(conn.id).state.value) == "inactive"
    target = urlparse(authorize_target(client, conn.id))
    assert f"{target.scheme}://{target.netloc}{target.path}" == CALLBACK
    assert parse_qs(target.query)["error"] == ["connection_unlinked"]

    r = patch(conn.id, {"state": "active"})
    assert r.status_code == 200, r.text
    assert str(client.sso.get_connection(conn.id).state.value) == "active"
    assert authorize_target(client, conn.id).startswith(IDP_SSO)

    client.sso.delete_connection(conn.id)
    with pytest.raises(NotFoundError):
        client.sso.get_connection(conn.id)

    events = client.events.list_events(
        events=["connection.activated", "connection.deactivated", "connection.deleted"], limit=100
    )
    mine = [e.event for e in events.data if getattr(e.data, "id", None) == conn.id]
    assert mine == ["connection.deactivated", "connection.activated", "connection.deleted"], mine
