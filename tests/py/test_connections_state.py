"""Connection PATCH through the official WorkOS Python SDK (workos 10.8): update_connection
renames, merges attribute_maps and saml_options (only what is sent changes), refuses what
it cannot change, `{"state": "inactive"|"active"}` (raw: the SDK has
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


OPENAPI_CHECK = Path(__file__).resolve().parents[1] / "js" / "openapi_check.mjs"


def validate(path: str, method: str, status: int, text: str) -> None:
    """The raw body against @workos/openapi-spec (tests/js/openapi_check.mjs)."""
    out = subprocess.run(["node", str(OPENAPI_CHECK), path, method, str(status)], input=text,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{method} {path} {status} vs the spec:\n{out.stderr}{out.stdout}"


def admin_settings(conn_id: str) -> dict:
    r = httpx2.get(f"{BASE_URL}/admin/connections/{conn_id}",
                   headers={"Authorization": f"Bearer {API_KEY}"}, trust_env=False)
    assert r.status_code == 200, r.text
    return r.json()["settings"]


def test_update_connection_attribute_maps_and_saml_options(client: WorkOSClient) -> None:
    """update_connection with attribute_maps and protocol_options: only the provided fields
    change, what the SDK sends as null goes back to its default, refused values are 422 and
    change nothing."""
    from workos.sso._resource import PatchProtocolOptionsOIDC, PatchProtocolOptionsSAML
    from workos.sso.models.patch_connection_attribute_maps import PatchConnectionAttributeMaps
    from workos.sso.models.patch_connection_oidc_options import PatchConnectionOIDCOptions
    from workos.sso.models.patch_connection_saml_options import PatchConnectionSAMLOptions
    from workos.sso.models.patch_connection_standard_attributes import (
        PatchConnectionStandardAttributes,
    )

    org = client.organizations.create_organization(name=f"py patch {TAG}")
    conn = client.sso.create_connection(
        organization_id=org.id,
        name=f"py patch {TAG}",
        connection_type="GenericSAML",
        protocol_options=CreateProtocolOptionsSAML(
            saml_options=CreateConnectionSAMLOptions(
                idp_entity_id=f"https://py-idp.example.test/patch/{TAG}",
                idp_sso_url=IDP_SSO,
                idp_signing_certs=[cert()],
            )
        ),
    )
    before = admin_settings(conn.id)

    # Refused, by name; nothing changes (the valid name beside it neither).
    with pytest.raises(UnprocessableEntityError) as e:
        client.sso.update_connection(
            conn.id, name="half applied",
            protocol_options=PatchProtocolOptionsSAML(
                saml_options=PatchConnectionSAMLOptions(idp_sso_url="not a url")),
        )
    assert [x["field"] for x in e.value.errors] == ["saml_options.idp_sso_url"], e.value.errors
    with pytest.raises(UnprocessableEntityError):
        client.sso.update_connection(
            conn.id, protocol_options=PatchProtocolOptionsOIDC(
                oidc_options=PatchConnectionOIDCOptions(client_id="c")),
        )
    with pytest.raises(UnprocessableEntityError):
        client.sso.update_connection(
            conn.id, protocol_options=PatchProtocolOptionsSAML(
                saml_options=PatchConnectionSAMLOptions(acs_url="https://elsewhere.example/acs")),
        )
    assert admin_settings(conn.id) == before
    assert client.sso.get_connection(conn.id).name == f"py patch {TAG}"

    moved = "https://py-idp2.example.test/sso"
    updated = client.sso.update_connection(
        conn.id,
        attribute_maps=PatchConnectionAttributeMaps(
            standard_attributes=PatchConnectionStandardAttributes(email="mail", first_name="givenName"),
            custom_attributes={"team": "dept"},
        ),
        protocol_options=PatchProtocolOptionsSAML(
            saml_options=PatchConnectionSAMLOptions(idp_sso_url=moved)),
    )
    assert updated.id == conn.id
    assert updated.name == f"py patch {TAG}"
    after = admin_settings(conn.id)
    assert after["attribute_map"]["email"][0] == "mail"
    assert after["attribute_map"]["first_name"][0] == "givenName"
    assert after["attribute_map"]["custom"] == {"team": "dept"}
    assert after["idp_sso_url"] == moved
    for k in ("idp_entity_id", "idp_signing_certs", "sp_signing_certs", "sp_encryption_certs",
              "sp_entity_id", "acs_url"):
        assert after[k] == before[k], k
    assert authorize_target(client, conn.id).startswith(moved)

    # Only the custom attribute is sent (the SDK adds `groups: null`, `name: null`): email
    # keeps its mapping; a null custom value removes that mapping.
    client.sso.update_connection(
        conn.id,
        attribute_maps=PatchConnectionAttributeMaps(custom_attributes={"team": None, "site": "office"}),
    )
    after = admin_settings(conn.id)
    assert after["attribute_map"]["email"][0] == "mail"
    assert after["attribute_map"]["custom"] == {"site": "office"}

    # The raw answer to the SDK's exact body validates against the spec's Connection.
    body = {"attribute_maps": PatchConnectionAttributeMaps(
        standard_attributes=PatchConnectionStandardAttributes(first_name="gn")).to_dict()}
    r = patch(conn.id, body)
    assert r.status_code == 200, r.text
    validate("/connections/{id}", "get", 200, r.text)
    assert admin_settings(conn.id)["attribute_map"]["first_name"][0] == "gn"
    # An explicit null (the SDK leaves unset fields out) puts the type's default back.
    r = patch(conn.id, {"attribute_maps": {"standard_attributes": {"email": None}}})
    assert r.status_code == 200, r.text
    assert admin_settings(conn.id)["attribute_map"]["email"][0] == "email", "null: the default"
