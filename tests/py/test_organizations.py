"""Organizations through the official WorkOS Python SDK (workos 10).

Run by tests/tests/organizations_sdk.rs against a fresh `idbridge serve`; needs
IDBRIDGE_URL, IDBRIDGE_API_KEY and IDBRIDGE_CLIENT_ID. The v10 SDK deserializes strictly (a
missing key raises), so every call here also checks the response shape.
"""

from __future__ import annotations

import os
import re
import secrets
from datetime import timezone

import pytest
from workos import (
    AuthenticationError,
    NotFoundError,
    UnprocessableEntityError,
    WorkOSClient,
)
from workos.common.models.organization_domain_data_state import (
    OrganizationDomainDataState,
)
from workos.organizations.models import OrganizationDomainData

BASE_URL = os.environ["IDBRIDGE_URL"]
API_KEY = os.environ["IDBRIDGE_API_KEY"]
CLIENT_ID = os.environ["IDBRIDGE_CLIENT_ID"]

# Unique to this run, so names, domains and external ids never collide with other data.
TAG = secrets.token_hex(4)
ORG_ID = re.compile(r"^org_[0-9A-HJKMNP-TV-Z]{26}$")
DOMAIN_ID = re.compile(r"^org_domain_[0-9A-HJKMNP-TV-Z]{26}$")
UNKNOWN_ORG = "org_01ARZ3NDEKTSV4RRFFQ69G5FAV"

VERIFIED = OrganizationDomainDataState.VERIFIED
PENDING = OrganizationDomainDataState.PENDING


@pytest.fixture(scope="module")
def client() -> WorkOSClient:
    return WorkOSClient(
        api_key=API_KEY, client_id=CLIENT_ID, base_url=BASE_URL, max_retries=0
    )


def domain_states(org) -> dict[str, str]:
    return {d.domain: str(d.state.value) for d in org.domains}


def assert_org_shape(org) -> None:
    assert org.object == "organization"
    assert ORG_ID.match(org.id), org.id
    assert org.created_at.tzinfo is not None
    assert org.created_at.utcoffset() == timezone.utc.utcoffset(None)
    assert org.updated_at >= org.created_at
    assert isinstance(org.metadata, dict)
    for d in org.domains:
        assert DOMAIN_ID.match(d.id), d.id
        assert d.organization_id == org.id


def newest_first(orgs) -> list[str]:
    """created_at desc, then id desc (workos-api.md §2.3)."""
    return [o.id for o in sorted(orgs, key=lambda o: (o.created_at, o.id), reverse=True)]


def test_create_get_update_delete(client: WorkOSClient) -> None:
    orgs = client.organizations
    created = orgs.create_organization(
        name=f"Py Acme {TAG}",
        domain_data=[
            OrganizationDomainData(domain=f"py-acme-{TAG}.example.com", state=VERIFIED),
            OrganizationDomainData(domain=f"py-acme-p-{TAG}.example.com", state=PENDING),
        ],
        external_id=f"py-ext-{TAG}",
        metadata={"tier": "gold", "owner": "py"},
    )
    assert_org_shape(created)
    assert created.name == f"Py Acme {TAG}"
    assert created.external_id == f"py-ext-{TAG}"
    assert created.metadata == {"tier": "gold", "owner": "py"}
    assert domain_states(created) == {
        f"py-acme-{TAG}.example.com": "verified",
        f"py-acme-p-{TAG}.example.com": "pending",
    }
    assert created.allow_profiles_outside_organization is False

    assert orgs.get_organization(created.id) == created
    assert orgs.get_organization_by_external_id(f"py-ext-{TAG}") == created

    updated = orgs.update_organization(
        created.id,
        name=f"Py Acme Renamed {TAG}",
        domain_data=[
            OrganizationDomainData(domain=f"py-acme-n-{TAG}.example.com", state=VERIFIED)
        ],
        metadata={"tier": "platinum", "owner": "py2"},
    )
    assert_org_shape(updated)
    assert updated.id == created.id
    assert updated.created_at == created.created_at
    assert updated.updated_at >= created.updated_at
    assert updated.name == f"Py Acme Renamed {TAG}"
    assert updated.metadata == {"tier": "platinum", "owner": "py2"}
    assert domain_states(updated) == {f"py-acme-n-{TAG}.example.com": "verified"}
    assert updated.external_id == f"py-ext-{TAG}", "external_id kept when not sent"
    assert orgs.get_organization(created.id) == updated

    by_old = orgs.list_organizations(domains=[f"py-acme-{TAG}.example.com"])
    assert by_old.data == []
    by_new = orgs.list_organizations(domains=[f"py-acme-n-{TAG}.example.com"])
    assert [o.id for o in by_new.data] == [created.id]

    orgs.delete_organization(created.id)
    with pytest.raises(NotFoundError) as err:
        orgs.get_organization(created.id)
    assert err.value.status_code == 404
    assert err.value.code == "entity_not_found"
    assert err.value.request_id, "NotFoundError carries the X-Request-ID"
    with pytest.raises(NotFoundError):
        orgs.get_organization_by_external_id(f"py-ext-{TAG}")
    with pytest.raises(NotFoundError):
        orgs.update_organization(created.id, name="ghost")


def test_list_paginates_across_pages(client: WorkOSClient) -> None:
    orgs = client.organizations
    mine = [orgs.create_organization(name=f"Py Page {TAG} {i:02d}") for i in range(23)]
    mine_ids = {o.id for o in mine}

    # Walk newest first with `after`.
    pages = []
    after = None
    for _ in range(1000):
        page = orgs.list_organizations(limit=5, after=after)
        assert len(page.data) <= 5
        pages.append(page)
        after = page.list_metadata.after
        if after is None:
            break
        assert after == page.data[-1].id
    assert len(pages) >= 5
    assert all(len(p.data) == 5 for p in pages[:-1]), "only the last page is short"
    assert pages[0].list_metadata.before is None
    walked = [o.id for p in pages for o in p.data]
    assert len(set(walked)) == len(walked), "an organization appeared on two pages"
    assert [i for i in walked if i in mine_ids] == newest_first(mine)

    # `before` the second page's first item gives back the first page.
    back = orgs.list_organizations(limit=5, before=pages[1].data[0].id)
    assert [o.id for o in back.data] == [o.id for o in pages[0].data]

    # auto_paging_iter follows `after` from the first page, keeping limit=5.
    first = orgs.list_organizations(limit=5)
    assert [o.id for o in first.auto_paging_iter()] == walked

    # Oldest first is the exact reverse.
    asc = [o.id for o in orgs.list_organizations(limit=7, order="asc").auto_paging_iter()]
    assert asc == list(reversed(walked))


def test_list_filters_by_domains(client: WorkOSClient) -> None:
    orgs = client.organizations
    a = orgs.create_organization(
        name=f"Py DA {TAG}",
        domain_data=[OrganizationDomainData(domain=f"py-da-{TAG}.example.com", state=VERIFIED)],
    )
    b = orgs.create_organization(
        name=f"Py DB {TAG}",
        domain_data=[OrganizationDomainData(domain=f"py-db-{TAG}.example.com", state=PENDING)],
    )
    only_a = orgs.list_organizations(domains=[f"py-da-{TAG}.example.com"])
    assert [o.id for o in only_a.data] == [a.id]
    both = orgs.list_organizations(
        domains=[f"py-da-{TAG}.example.com", f"py-db-{TAG}.example.com"]
    )
    assert [o.id for o in both.data] == newest_first([a, b])
    none = orgs.list_organizations(domains=[f"py-none-{TAG}.example.com"])
    assert none.data == []
    assert none.list_metadata.after is None


def test_errors(client: WorkOSClient) -> None:
    orgs = client.organizations
    with pytest.raises(NotFoundError) as nf:
        orgs.get_organization(UNKNOWN_ORG)
    assert nf.value.code == "entity_not_found"
    assert UNKNOWN_ORG in str(nf.value)

    wrong = WorkOSClient(
        api_key="sk_test_wrong_key_0000000000",
        client_id=CLIENT_ID,
        base_url=BASE_URL,
        max_retries=0,
    )
    with pytest.raises(AuthenticationError) as auth:
        wrong.organizations.list_organizations()
    assert auth.value.status_code == 401
    with pytest.raises(AuthenticationError):
        wrong.organizations.create_organization(name=f"Py Intruder {TAG}")

    for limit in (0, 101):
        with pytest.raises(UnprocessableEntityError) as bad:
            orgs.list_organizations(limit=limit)
        assert bad.value.status_code == 422
        assert bad.value.code == "invalid_request_parameters"

    with pytest.raises(UnprocessableEntityError):
        orgs.create_organization(name="")

    names = {o.name for o in orgs.list_organizations(limit=100).auto_paging_iter()}
    assert f"Py Intruder {TAG}" not in names, "a 401 request wrote anyway"
