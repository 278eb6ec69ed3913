"""Admin Portal links through the official WorkOS Python SDK (workos 10).

Run by tests/tests/console_e2e.rs against a fresh `idbridge serve`: `admin_portal.generate_link`
returns a link the server opens once (then 410), for one organization; unknown organizations
and intents get WorkOS's errors.
"""

from __future__ import annotations

import os
import secrets
import urllib.error
import urllib.request

import pytest
from workos import NotFoundError, UnprocessableEntityError, WorkOSClient

BASE_URL = os.environ["IDBRIDGE_URL"]
API_KEY = os.environ["IDBRIDGE_API_KEY"]
CLIENT_ID = os.environ["IDBRIDGE_CLIENT_ID"]
TAG = secrets.token_hex(4)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: D102
        return None


OPENER = urllib.request.build_opener(NoRedirect)


def open_link(link: str) -> tuple[int, str]:
    try:
        with OPENER.open(link) as resp:
            return resp.status, resp.headers.get("Set-Cookie") or ""
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Set-Cookie") or ""


@pytest.fixture(scope="module")
def client() -> WorkOSClient:
    return WorkOSClient(api_key=API_KEY, client_id=CLIENT_ID, base_url=BASE_URL, max_retries=0)


def test_generate_link_opens_once(client: WorkOSClient) -> None:
    org = client.organizations.create_organization(name=f"Py Portal {TAG}")
    for intent in ["sso", "dsync", "domain_verification", "certificate_renewal"]:
        resp = client.admin_portal.generate_link(
            organization=org.id,
            intent=intent,
            success_url="https://app.example/done",
            return_url="https://app.example/back",
        )
        assert resp.link.startswith(f"{BASE_URL}/portal/launch?token="), resp.link
        status, cookie = open_link(resp.link)
        assert status == 303, status
        assert cookie.startswith("idbridge_portal=") and "HttpOnly" in cookie, cookie
        again, cookie = open_link(resp.link)
        assert again == 410 and not cookie, (again, cookie)


def test_unknown_organization_is_not_found(client: WorkOSClient) -> None:
    with pytest.raises(NotFoundError) as err:
        client.admin_portal.generate_link(organization="org_01ARZ3NDEKTSV4RRFFQ69G5FAV", intent="sso")
    assert "Organization not found" in str(err.value)


def test_unknown_intent_is_unprocessable(client: WorkOSClient) -> None:
    org = client.organizations.create_organization(name=f"Py Portal bad {TAG}")
    with pytest.raises(UnprocessableEntityError):
        client.admin_portal.generate_link(organization=org.id, intent="bring_your_own_key")
    with pytest.raises(UnprocessableEntityError):
        client.admin_portal.generate_link(organization=org.id, intent="nonsense")
