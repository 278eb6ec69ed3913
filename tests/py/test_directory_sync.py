"""Directory Sync and the Events API through the official WorkOS Python SDK (workos 10).

Run by tests/tests/directory_sync_sdk.rs against a fresh `idbridge serve`; needs IDBRIDGE_URL,
IDBRIDGE_API_KEY and IDBRIDGE_CLIENT_ID. The directory is fed the way an IdP feeds it: plain
SCIM 2.0 requests to the endpoint and bearer token `POST /admin/directories` hands out. The
v10 SDK deserializes strictly (a missing key raises), so every call also checks the shape; the
raw responses are validated against the OpenAPI spec by the Node twin of this file.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from urllib.parse import urlparse

import pytest
from workos import NotFoundError, UnprocessableEntityError, WorkOSClient
from workos.organizations.models import OrganizationDomainData
from workos.common.models.organization_domain_data_state import (
    OrganizationDomainDataState,
)

BASE_URL = os.environ["IDBRIDGE_URL"]
API_KEY = os.environ["IDBRIDGE_API_KEY"]
CLIENT_ID = os.environ["IDBRIDGE_CLIENT_ID"]

TAG = secrets.token_hex(4)
UNKNOWN_USER = "directory_user_01ARZ3NDEKTSV4RRFFQ69G5FAV"
UNKNOWN_GROUP = "directory_group_01ARZ3NDEKTSV4RRFFQ69G5FAV"
UNKNOWN_DIR = "directory_01ARZ3NDEKTSV4RRFFQ69G5FAV"
DSYNC_EVENTS = [
    "dsync.activated",
    "dsync.deleted",
    "dsync.user.created",
    "dsync.user.updated",
    "dsync.user.deleted",
    "dsync.group.created",
    "dsync.group.deleted",
    "dsync.group.user_added",
    "dsync.group.user_removed",
]


def http(method: str, url: str, token: str, body=None, content_type="application/json"):
    """A plain HTTP request; returns (status, parsed JSON or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, (json.loads(raw) if raw else None)


class ScimDirectory:
    """A directory created through the admin API, fed through its SCIM endpoint."""

    def __init__(self, organization_id: str, name: str) -> None:
        status, body = http(
            "POST",
            f"{BASE_URL}/admin/directories",
            API_KEY,
            {"organization_id": organization_id, "name": name, "type": "generic scim v2.0"},
        )
        assert status == 201, body
        self.id = body["directory"]["id"]
        path = urlparse(body["scim"]["endpoint"]).path.rstrip("/")
        self.base = BASE_URL.rstrip("/") + path
        self.token = body["scim"]["bearer_token"]

    def call(self, method: str, path: str, body=None):
        status, out = http(
            method, self.base + path, self.token, body, "application/scim+json"
        )
        assert 200 <= status < 300, (method, path, status, out)
        return out

    def user(self, i: int, prefix: str) -> dict:
        email = f"{prefix}{i:02d}-{TAG}@example.com"
        created = self.call(
            "POST",
            "/Users",
            {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": email,
                "externalId": f"{prefix}-ext-{i:02d}",
                "name": {"givenName": f"Given{i:02d}", "familyName": "Py"},
                "emails": [{"primary": True, "value": email, "type": "work"}],
                "active": True,
            },
        )
        return {"scim_id": created["id"], "email": email, "idp_id": f"{prefix}-ext-{i:02d}"}

    def group(self, name: str, members: list[str]) -> dict:
        g = self.call(
            "POST",
            "/Groups",
            {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": name,
                "externalId": f"grp-{name}",
                "members": [{"value": m} for m in members],
            },
        )
        return g


@pytest.fixture(scope="module")
def client() -> WorkOSClient:
    return WorkOSClient(
        api_key=API_KEY, client_id=CLIENT_ID, base_url=BASE_URL, max_retries=0
    )


@pytest.fixture(scope="module")
def world(client: WorkOSClient) -> dict:
    verified = OrganizationDomainDataState.VERIFIED
    acme = client.organizations.create_organization(
        name=f"Py Acme {TAG}",
        domain_data=[OrganizationDomainData(domain=f"py-acme-{TAG}.example.com", state=verified)],
    )
    beta = client.organizations.create_organization(name=f"Py Beta {TAG}")
    main = ScimDirectory(acme.id, f"Py Okta {TAG}")
    side = ScimDirectory(beta.id, f"Py Azure {TAG}")
    users = [main.user(i, "pymain") for i in range(17)]
    side_users = [side.user(i, "pyside") for i in range(2)]
    eng = main.group(f"Eng {TAG}", [u["scim_id"] for u in users[:9]])
    side.group(f"Side {TAG}", [u["scim_id"] for u in side_users])
    return {
        "acme": acme,
        "beta": beta,
        "main": main,
        "side": side,
        "users": users,
        "side_users": side_users,
        "eng": eng,
    }


def newest_first(items) -> list[str]:
    return [x.id for x in sorted(items, key=lambda x: (x.created_at, x.id), reverse=True)]


def test_directories(client: WorkOSClient, world: dict) -> None:
    ds = client.directory_sync
    main, side = world["main"], world["side"]
    listed = ds.list_directories(limit=100)
    assert [d.id for d in listed.data] == [side.id, main.id]
    d = ds.get_directory(main.id)
    assert d.object == "directory"
    assert d.organization_id == world["acme"].id
    assert d.name == f"Py Okta {TAG}"
    assert str(d.state.value) == "linked", "REST vocabulary; py10 keeps it raw"
    assert str(d.type.value) == "generic scim v2.0"
    assert d.domain == f"py-acme-{TAG}.example.com"
    assert d.external_key
    assert d.metadata.groups == 1
    assert d.created_at.utcoffset() == timezone.utc.utcoffset(None)
    assert ds.get_directory(side.id).domain is None, "no domain: key omitted, SDK gives None"

    assert [x.id for x in ds.list_directories(organization_id=world["beta"].id).data] == [side.id]
    assert [x.id for x in ds.list_directories(search="py OKTA").data] == [main.id]
    assert [x.id for x in ds.list_directories(domain=f"py-acme-{TAG}.example.com").data] == [main.id]
    assert ds.list_directories(search=f"nothing {TAG}").data == []

    first = ds.list_directories(limit=1)
    assert [x.id for x in first.data] == [side.id]
    assert first.list_metadata.after == side.id
    assert [x.id for x in first.auto_paging_iter()] == [side.id, main.id]
    back = ds.list_directories(limit=1, before=main.id)
    assert [x.id for x in back.data] == [side.id]
    assert [x.id for x in ds.list_directories(order="asc").data] == [main.id, side.id]

    with pytest.raises(NotFoundError) as nf:
        ds.get_directory(UNKNOWN_DIR)
    assert nf.value.code == "entity_not_found"


def test_users_paging_and_filters(client: WorkOSClient, world: dict) -> None:
    ds = client.directory_sync
    main, users = world["main"], world["users"]

    pages = []
    after = None
    for _ in range(100):
        page = ds.list_users(directory=main.id, limit=4, after=after)
        assert len(page.data) <= 4
        pages.append(page)
        after = page.list_metadata.after
        if after is None:
            break
        assert after == page.data[-1].id
    assert len(pages) == 5, "17 users in pages of 4"
    assert pages[0].list_metadata.before is None
    walked = [u for p in pages for u in p.data]
    assert [u.email for u in walked] == [u["email"] for u in reversed(users)]
    assert [u.id for u in walked] == newest_first(walked)

    back = ds.list_users(directory=main.id, limit=4, before=pages[2].data[0].id)
    assert [u.id for u in back.data] == [u.id for u in pages[1].data]
    asc = [u.id for u in ds.list_users(directory=main.id, order="asc", limit=6).auto_paging_iter()]
    assert asc == [u.id for u in reversed(walked)]
    assert [u.id for u in ds.list_users(directory=main.id, limit=3).auto_paging_iter()] == [
        u.id for u in walked
    ]

    u = walked[-1]  # the first user created
    assert u.object == "directory_user"
    assert u.directory_id == main.id
    assert u.organization_id == world["acme"].id
    assert u.idp_id == users[0]["idp_id"]
    assert u.first_name == "Given00" and u.last_name == "Py"
    assert str(u.state.value) == "active"
    assert isinstance(u.custom_attributes, dict)
    assert [g.name for g in u.groups] == [f"Eng {TAG}"]

    # idp_id and email need the directory; both are exact lookups (email case-insensitive).
    by_idp = ds.list_users(directory=main.id, idp_id=users[5]["idp_id"])
    assert [x.email for x in by_idp.data] == [users[5]["email"]]
    by_email = ds.list_users(directory=main.id, email=users[6]["email"].upper())
    assert [x.email for x in by_email.data] == [users[6]["email"]]
    assert ds.list_users(directory=main.id, idp_id="nobody").data == []
    # The same idp_id in another directory is not found here.
    other = ds.list_users(directory=world["side"].id, idp_id=users[0]["idp_id"])
    assert other.data == []

    # By group, with and without the directory.
    groups = ds.list_groups(directory=main.id)
    assert [g.name for g in groups.data] == [f"Eng {TAG}"]
    eng = groups.data[0]
    assert eng.idp_id == f"grp-Eng {TAG}"
    members = [x.email for x in ds.list_users(group=eng.id, limit=2).auto_paging_iter()]
    assert members == [x["email"] for x in reversed(users[:9])]
    with_dir = ds.list_users(directory=main.id, group=eng.id, order="asc", limit=100)
    assert [x.email for x in with_dir.data] == [x["email"] for x in users[:9]]

    got = ds.get_user(walked[0].id)
    assert got == walked[0]
    assert got.groups == [], "the last user is in no group"
    assert [g.id for g in ds.list_groups(user=u.id).data] == [eng.id]
    assert ds.list_groups(user=walked[0].id).data == []
    assert ds.get_group(eng.id) == eng


def test_errors(client: WorkOSClient, world: dict) -> None:
    ds = client.directory_sync
    for call in (
        lambda: ds.get_user(UNKNOWN_USER),
        lambda: ds.get_group(UNKNOWN_GROUP),
        lambda: ds.list_users(directory=UNKNOWN_DIR),
        lambda: ds.list_users(group=UNKNOWN_GROUP),
        lambda: ds.list_groups(user=UNKNOWN_USER),
        lambda: ds.list_groups(directory=UNKNOWN_DIR),
    ):
        with pytest.raises(NotFoundError) as nf:
            call()
        assert nf.value.status_code == 404
        assert nf.value.code == "entity_not_found"
    for call in (
        lambda: ds.list_users(),
        lambda: ds.list_users(idp_id="x"),
        lambda: ds.list_users(group=UNKNOWN_GROUP, email="a@b.c"),
        lambda: ds.list_groups(),
        lambda: ds.list_users(directory=world["main"].id, limit=101),
    ):
        with pytest.raises(UnprocessableEntityError) as bad:
            call()
        assert bad.value.status_code == 422
    # A group of another directory does not filter this one (tenancy).
    side_group = ds.list_groups(directory=world["side"].id).data[0]
    with pytest.raises(NotFoundError):
        ds.list_users(directory=world["main"].id, group=side_group.id)


def test_events_and_delete(client: WorkOSClient, world: dict) -> None:
    ev = client.events
    acme, beta = world["acme"], world["beta"]
    mine = ev.list_events(events=DSYNC_EVENTS, organization_id=acme.id, limit=100).data
    kinds = [e.event for e in mine]
    assert kinds[0] == "dsync.activated"
    assert kinds.count("dsync.user.created") == 17
    assert kinds.count("dsync.group.created") == 1
    assert kinds.count("dsync.group.user_added") == 9
    ids = [e.id for e in mine]

    walked: list[str] = []
    after = None
    for _ in range(100):
        page = ev.list_events(
            events=DSYNC_EVENTS, organization_id=acme.id, limit=5, after=after
        )
        walked += [e.id for e in page.data]
        after = page.list_metadata.after
        if after is None:
            break
    assert walked == ids

    only = ev.list_events(events=["dsync.group.created"], organization_id=acme.id)
    assert [e.event for e in only.data] == ["dsync.group.created"]

    first = mine[0].created_at
    last = mine[-1].created_at
    iso = lambda t: t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")  # noqa: E731
    ranged = ev.list_events(
        events=DSYNC_EVENTS, organization_id=acme.id, range_start=iso(first), range_end=iso(last), limit=100
    )
    assert [e.id for e in ranged.data] == ids
    early = ev.list_events(
        events=DSYNC_EVENTS,
        range_start=iso(first - timedelta(hours=2)),
        range_end=iso(first - timedelta(hours=1)),
    )
    assert early.data == []

    beta_kinds = [
        e.event for e in ev.list_events(events=DSYNC_EVENTS, organization_id=beta.id, limit=100).data
    ]
    assert beta_kinds.count("dsync.user.created") == 2

    # Delete: exactly one dsync.deleted, no per-user or per-group deletes.
    side = world["side"]
    client.directory_sync.delete_directory(side.id)
    with pytest.raises(NotFoundError):
        client.directory_sync.get_directory(side.id)
    with pytest.raises(NotFoundError):
        client.directory_sync.delete_directory(side.id)
    after_delete = ev.list_events(events=DSYNC_EVENTS, organization_id=beta.id, limit=100).data
    tail = [e.event for e in after_delete][len(beta_kinds):]
    assert tail == ["dsync.deleted"]
    assert datetime.now(timezone.utc) >= after_delete[-1].created_at - timedelta(minutes=5)
