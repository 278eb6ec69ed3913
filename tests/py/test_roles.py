"""The WorkOS roles endpoints for an organization through the official Python SDK (workos 10.8:
authorization.list_organization_roles, get_organization_role), served from the role settings
/admin/organizations/{id}/roles manages. Run by tests/tests/roles_sdk.rs."""

from __future__ import annotations

import os
import secrets

import httpx2
import pytest
from workos import NotFoundError, WorkOSClient

BASE_URL = os.environ["IDBRIDGE_URL"]
API_KEY = os.environ["IDBRIDGE_API_KEY"]
CLIENT_ID = os.environ["IDBRIDGE_CLIENT_ID"]
TAG = secrets.token_hex(4)


def test_organization_roles() -> None:
    client = WorkOSClient(api_key=API_KEY, client_id=CLIENT_ID, base_url=BASE_URL, max_retries=0)
    org = client.organizations.create_organization(name=f"py roles {TAG}")
    r = httpx2.put(
        f"{BASE_URL}/admin/organizations/{org.id}/roles",
        json={"roles": [{"slug": "viewer", "name": "Viewer", "priority": 50, "default": True},
                        {"slug": "owner", "name": "Owner", "priority": 1}]},
        headers={"Authorization": f"Bearer {API_KEY}"},
        trust_env=False,
    )
    assert r.status_code == 200, r.text
    roles = client.authorization.list_organization_roles(organization_id=org.id)
    assert [(x.slug, x.name) for x in roles.data] == [("owner", "Owner"), ("viewer", "Viewer")]
    owner = client.authorization.get_organization_role(organization_id=org.id, slug="owner")
    assert owner.id == roles.data[0].id
    assert owner.permissions == []
    with pytest.raises(NotFoundError):
        client.authorization.get_organization_role(organization_id=org.id, slug="nobody")
