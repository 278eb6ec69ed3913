"""SCIM push end to end through the official WorkOS Python SDK (workos 10): the users (with
their groups) and the groups of the SOURCE idbridge's directory and of the TARGET idbridge's
directory the forwarder pushed into are the same, field by field.

Run by tests/tests/forward_e2e.rs; needs FWD_SOURCE_URL, FWD_SOURCE_KEY, FWD_SOURCE_DIRECTORY,
FWD_TARGET_URL, FWD_TARGET_KEY, FWD_TARGET_DIRECTORY, FWD_EXPECT_USERS and IDBRIDGE_CLIENT_ID.
"""

from __future__ import annotations

import os

from workos import WorkOSClient

# Not compared, and why: ids (each idbridge mints its own; objects are matched by idp_id, which
# the forwarder carries as SCIM externalId), created_at / updated_at (each side's own write
# times), raw_attributes (deprecated, WorkOS serves {}; each side keeps its own input there).
EXCLUDED = {"id", "directory_id", "organization_id", "created_at", "updated_at", "raw_attributes"}


def client(url: str, key: str) -> WorkOSClient:
    return WorkOSClient(api_key=key, client_id=os.environ["IDBRIDGE_CLIENT_ID"], base_url=url, max_retries=0)


def strip(model) -> dict:
    d = model.to_dict()
    return {k: v for k, v in d.items() if k not in EXCLUDED}


def snapshot(url: str, key: str, directory: str):
    ds = client(url, key).directory_sync
    users = []
    for u in ds.list_users(directory=directory, limit=100).auto_paging_iter():
        d = strip(u)
        d["groups"] = sorted((strip(g) for g in u.groups), key=lambda g: g["idp_id"])
        users.append(d)
    groups = [strip(g) for g in ds.list_groups(directory=directory, limit=100).auto_paging_iter()]
    return (
        sorted(users, key=lambda u: u["idp_id"]),
        sorted(groups, key=lambda g: g["idp_id"]),
    )


def test_target_shows_the_same_directory_as_the_source():
    env = os.environ
    su, sg = snapshot(env["FWD_SOURCE_URL"], env["FWD_SOURCE_KEY"], env["FWD_SOURCE_DIRECTORY"])
    tu, tg = snapshot(env["FWD_TARGET_URL"], env["FWD_TARGET_KEY"], env["FWD_TARGET_DIRECTORY"])
    assert len(su) == int(env["FWD_EXPECT_USERS"])
    assert sg, "no groups to compare"
    for s, t in zip(su, tu):
        assert t == s, f"user {s['idp_id']}"
    assert len(tu) == len(su)
    assert tg == sg
    assert any(u["groups"] for u in su), "no memberships compared"
    assert all(u["custom_attributes"] for u in su), "no custom attributes"
