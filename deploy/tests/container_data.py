"""The data half of scripts/appliance-test.sh, through the official WorkOS Python SDK.

  container_data.py write STATE_FILE   creates an organization (SDK), a SCIM directory (admin
                                       API: the SDK has no call for it) and one user through
                                       the directory's SCIM endpoint; checks them through the
                                       SDK and records their ids in STATE_FILE.
  container_data.py check STATE_FILE   in a new container on the same volume: the SDK finds the
                                       same organization, directory and user, and the SCIM
                                       token handed out before still works.
  container_data.py saml STATE_FILE    a SAML login through the container: a connection made
                                       with the SDK, pysaml2 (the peer IdP of the test suite)
                                       signs the response, the container verifies it (libxml2 +
                                       xmlsec in the image, ICU's data stubbed) and the SDK's
                                       get_profile_and_token returns the profile; a response
                                       signed by another key is refused.

Needs IDBRIDGE_URL, IDBRIDGE_API_KEY and IDBRIDGE_CLIENT_ID; `saml` also IDBRIDGE_SSO_CALLBACK
(a redirect URI the container allows) and pysaml2 in $IDBRIDGE_PEERS_DIR/pysaml2-venv
(scripts/test-deps.d/saml.sh).
"""

import base64
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

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


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def browser(method, url, body=None, headers=None):
    """One request as a browser makes it, redirects not followed: (status, headers, text)."""
    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(url, data=body.encode() if body else None, method=method)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with opener.open(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode("utf-8", "replace")


def throwaway_key_pair(directory, name):
    key, cert = Path(directory, f"{name}.key"), Path(directory, f"{name}.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
         "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return {"key": key.read_text(), "cert": cert.read_text()}


def saml(state_file):
    from workos.sso._resource import CreateProtocolOptionsSAML
    from workos.sso.models.create_connection_saml_options import CreateConnectionSAMLOptions

    callback = os.environ["IDBRIDGE_SSO_CALLBACK"]
    peers = Path(os.environ.get("IDBRIDGE_PEERS_DIR", "/var/cache/idbridge-peers"))
    pysaml2 = peers / "pysaml2-venv" / "bin" / "python"
    idp_script = Path(__file__).resolve().parents[2] / "crates/saml/tests/peers/pysaml2_idp.py"
    with open(state_file) as f:
        state = json.load(f)
    idp_entity, idp_sso = "https://idp.appliance.example/metadata", "https://idp.appliance.example/sso"
    with tempfile.TemporaryDirectory() as d:
        keys, other = throwaway_key_pair(d, "idp"), throwaway_key_pair(d, "forger")
    workos = client()
    conn = workos.sso.create_connection(
        organization_id=state["organization_id"],
        name="Appliance SAML",
        connection_type="GenericSAML",
        protocol_options=CreateProtocolOptionsSAML(
            saml_options=CreateConnectionSAMLOptions(
                idp_entity_id=idp_entity, idp_sso_url=idp_sso, idp_signing_certs=[keys["cert"]]
            )
        ),
    )
    status, _, sp_metadata = browser("GET", f"{BASE_URL}/sso/saml/metadata/{conn.id}")
    assert status == 200, status

    def login(signing_keys, email):
        url = workos.sso.get_authorization_url(connection=conn.id, redirect_uri=callback, state="st")
        status, headers, text = browser("GET", url)
        assert status == 302, (status, text)
        location = urlparse(headers["Location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == idp_sso, location
        query = parse_qs(location.query)
        request = zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15).decode()
        request_id = re.search(r'\sID="([^"]+)"', request).group(1)
        cookie = headers["Set-Cookie"].split(";")[0]
        cfg = {
            "idp": idp_entity, "idpKey": signing_keys["key"], "idpCert": signing_keys["cert"],
            "spMetadata": sp_metadata, "encrypt": False,
            "sp": f"{BASE_URL}/sso/saml/{conn.id}", "acs": f"{BASE_URL}/sso/saml/acs/{conn.id}",
            "reqId": request_id, "user": email, "signMessage": True, "signAssertion": True,
            "attributes": {"id": [f"appliance-{email}"], "email": [email],
                           "firstName": ["Grace"], "lastName": ["Hopper"], "groups": ["Navy"]},
        }
        out = subprocess.run([str(pysaml2), str(idp_script)], input=json.dumps(cfg),
                             capture_output=True, text=True, check=True)
        return browser(
            "POST", f"{BASE_URL}/sso/saml/acs/{conn.id}",
            body=urlencode({"SAMLResponse": out.stdout.strip(), "RelayState": query["RelayState"][0]}),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie},
        )

    email = "grace@appliance.example"
    status, headers, text = login(keys, email)
    assert status == 302, (status, text)
    back = urlparse(headers["Location"])
    q = parse_qs(back.query)
    assert "code" in q and "error" not in q, q
    profile = workos.sso.get_profile_and_token(code=q["code"][0]).profile
    assert (profile.email, profile.first_name, profile.connection_id) == (email, "Grace", conn.id), profile
    # The same flow signed by a key the connection does not trust: refused, no code.
    status, headers, text = login(other, "mallory@appliance.example")
    location = headers.get("Location") or ""
    refused = status >= 400 or (status == 302 and "error=" in location and "code=" not in location)
    assert refused, (status, location, text[:300])
    print(f"SAML login through the container: profile {profile.id} ({profile.email}); a forged "
          f"response was refused ({status})")


if __name__ == "__main__":
    commands = {"write": write, "check": check, "saml": saml}
    if len(sys.argv) != 3 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](sys.argv[2])
