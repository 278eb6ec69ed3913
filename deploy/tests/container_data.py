"""The data half of scripts/appliance-test.sh, through the official WorkOS Python SDK.

  container_data.py write STATE_FILE   creates an organization (SDK), a SCIM directory (admin
                                       API: the SDK has no call for it) and one user through
                                       the directory's SCIM endpoint; checks them through the
                                       SDK and records their ids in STATE_FILE.
  container_data.py check STATE_FILE   in a new container on the same volume: the SDK finds the
                                       same organization, directory and user, and the SCIM
                                       token handed out before still works.

Needs IDBRIDGE_URL, IDBRIDGE_API_KEY and IDBRIDGE_CLIENT_ID.
"""

import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from urllib.parse import urlparse

from workos import WorkOSClient

BASE_URL = os.environ["IDBRIDGE_URL"]
API_KEY = os.environ["IDBRIDGE_API_KEY"]
CLIENT_ID = os.environ["IDBRIDGE_CLIENT_ID"]


def http(method, url, token, body=None, content_type="application/json"):
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


def client():
    return WorkOSClient(api_key=API_KEY, client_id=CLIENT_ID, base_url=BASE_URL, max_retries=0)


def write(state_file):
    tag = secrets.token_hex(4)
    workos = client()
    org = workos.organizations.create_organization(name=f"Appliance {tag}")
    status, body = http(
        "POST",
        f"{BASE_URL}/admin/directories",
        API_KEY,
        {"organization_id": org.id, "name": f"Appliance SCIM {tag}", "type": "generic scim v2.0"},
    )
    assert status == 201, (status, body)
    directory_id = body["directory"]["id"]
    scim_base = BASE_URL.rstrip("/") + urlparse(body["scim"]["endpoint"]).path.rstrip("/")
    token = body["scim"]["bearer_token"]
    email = f"ada-{tag}@appliance.example"
    status, user = http(
        "POST",
        f"{scim_base}/Users",
        token,
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": email,
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            "emails": [{"primary": True, "value": email, "type": "work"}],
            "active": True,
        },
        "application/scim+json",
    )
    assert status == 201, (status, user)
    # Read back through the SDK before the restart.
    assert workos.organizations.get_organization(org.id).name == f"Appliance {tag}"
    assert workos.directory_sync.get_directory(directory_id).organization_id == org.id
    users = workos.directory_sync.list_users(directory=directory_id).data
    assert [u.email for u in users] == [email], users
    state = {
        "organization_id": org.id,
        "organization_name": f"Appliance {tag}",
        "directory_id": directory_id,
        "scim_base": scim_base,
        "scim_token": token,
        "user_id": users[0].id,
        "email": email,
    }
    with open(state_file, "w") as f:
        json.dump(state, f)
    print(f"wrote organization {org.id}, directory {directory_id}, user {users[0].id}")


def check(state_file):
    with open(state_file) as f:
        state = json.load(f)
    workos = client()
    org = workos.organizations.get_organization(state["organization_id"])
    assert org.name == state["organization_name"], org
    d = workos.directory_sync.get_directory(state["directory_id"])
    assert d.organization_id == state["organization_id"], d
    assert d.state == "linked", f"directory state {d.state}: the SCIM user did not survive"
    users = workos.directory_sync.list_users(directory=state["directory_id"]).data
    assert [(u.id, u.email) for u in users] == [(state["user_id"], state["email"])], users
    # The SCIM token (only its hash is stored) still authenticates after the restart.
    status, listed = http("GET", f"{state['scim_base']}/Users", state["scim_token"])
    assert status == 200 and listed["totalResults"] == 1, (status, listed)
    status, _ = http("GET", f"{state['scim_base']}/Users", "wrong-token-" + "x" * 20)
    assert status == 401, status
    print(
        f"found organization {org.id}, directory {d.id} ({d.state}), user {users[0].id} "
        "after the restart; the SCIM token still works"
    )


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        sys.exit(__doc__)
    {"write": write, "check": check}[sys.argv[1]](sys.argv[2])
