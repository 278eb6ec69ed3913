"""The WorkOS roles endpoints for an organization through the official Python SDK (workos 10.8:
authorization.list_organization_roles, get_organization_role, create_organization_role,
update_organization_role, delete_organization_role), served from the role settings
/admin/organizations/{id}/roles manages; raw bodies and the organization_role.* events are
validated against @workos/openapi-spec. Run by tests/tests/roles_sdk.rs."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import httpx2
import pytest
from workos import ConflictError, NotFoundError, UnprocessableEntityError, WorkOSClient

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


OPENAPI_CHECK = Path(__file__).resolve().parents[1] / "js" / "openapi_check.mjs"


def validate(path: str, method: str, status: int, text: str) -> None:
    """The raw body against @workos/openapi-spec (tests/js/openapi_check.mjs)."""
    out = subprocess.run(["node", str(OPENAPI_CHECK), path, method, str(status)], input=text,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{method} {path} {status} vs the spec:\n{out.stderr}{out.stdout}"


def raw(method: str, path: str, body: dict | None = None) -> httpx2.Response:
    return httpx2.request(method, f"{BASE_URL}{path}", json=body,
                          headers={"Authorization": f"Bearer {API_KEY}"}, trust_env=False)


def test_organization_role_writes() -> None:
    client = WorkOSClient(api_key=API_KEY, client_id=CLIENT_ID, base_url=BASE_URL, max_retries=0)
    org = client.organizations.create_organization(name=f"py roles write {TAG}")
    r = raw("PUT", f"/admin/organizations/{org.id}/roles",
            {"roles": [{"slug": "viewer", "name": "Viewer", "default": True}]})
    assert r.status_code == 200, r.text
    base = f"/authorization/organizations/{org.id}/roles"

    created = client.authorization.create_organization_role(
        organization_id=org.id, slug="org-auditor", name="Auditor", description="Reads the logs")
    assert (created.slug, created.name, created.description) == ("org-auditor", "Auditor", "Reads the logs")
    generated = client.authorization.create_organization_role(organization_id=org.id, name="Help Desk")
    assert generated.slug.startswith("org-help-desk-"), generated.slug
    with pytest.raises(ConflictError):
        client.authorization.create_organization_role(organization_id=org.id, slug="org-auditor", name="Again")
    with pytest.raises(UnprocessableEntityError):
        client.authorization.create_organization_role(organization_id=org.id, name="x" * 49)
    r = raw("POST", base, {"slug": "org-raw", "name": "Raw"})
    assert r.status_code == 201, r.text
    validate("/authorization/organizations/{organizationId}/roles", "post", 201, r.text)

    updated = client.authorization.update_organization_role(
        organization_id=org.id, slug="org-auditor", description=None)
    assert updated.description is None
    assert updated.name == "Auditor", "not sent: kept"
    assert updated.id == created.id
    r = raw("PATCH", f"{base}/org-auditor", {"name": "Auditors"})
    assert r.status_code == 200, r.text
    validate("/authorization/organizations/{organizationId}/roles/{slug}", "patch", 200, r.text)
    with pytest.raises(NotFoundError):
        client.authorization.update_organization_role(organization_id=org.id, slug="org-nobody", name="N")

    client.authorization.delete_organization_role(organization_id=org.id, slug="org-auditor")
    with pytest.raises(NotFoundError):
        client.authorization.get_organization_role(organization_id=org.id, slug="org-auditor")
    with pytest.raises(NotFoundError):
        client.authorization.delete_organization_role(organization_id=org.id, slug="org-auditor")
    roles = client.authorization.list_organization_roles(organization_id=org.id)
    assert [x.slug for x in roles.data] == ["viewer", generated.slug, "org-raw"]

    kinds = ["organization_role.created", "organization_role.updated", "organization_role.deleted"]
    r = raw("GET", f"/events?events={','.join(kinds)}&organization_id={org.id}&limit=100")
    assert r.status_code == 200, r.text
    validate("/events", "get", 200, r.text)
    events = client.events.list_events(events=kinds, organization_id=org.id, limit=100)
    assert [(e.event, e.data.slug) for e in events.data] == [
        # The admin PUT that set up the organization's roles announces the role it added.
        ("organization_role.created", "viewer"),
        ("organization_role.created", "org-auditor"),
        ("organization_role.created", generated.slug),
        ("organization_role.created", "org-raw"),
        ("organization_role.updated", "org-auditor"),
        ("organization_role.updated", "org-auditor"),
        ("organization_role.deleted", "org-auditor"),
    ]
