"""OIDC SSO end to end through the official WorkOS Python SDK (workos 10.8) with a real OpenID
Provider (oidc-provider on loopback).

get_authorization_url → our /sso/authorize → the provider's login and consent pages (driven by
an httpx2 client with a cookie jar, redirects followed by hand) → our /sso/oidc/callback → the
app's redirect with code and state → get_profile_and_token. The /sso/token and /sso/profile
bodies the SDK received are validated against @workos/openapi-spec (by
tests/js/openapi_check.mjs, the validator the Node tests use).

Run by tests/tests/sso_oidc_sdk.rs, which starts idbridge and the provider and creates:
  org A (roles admiral > engineer, default member; multiple mode; navy → admiral,
         cobol → engineer) with a GenericOIDC connection,
  org B (roles lead > analyst, default member; single mode; navy → lead,
         analysts → analyst) with an OktaOIDC connection,
  org C (no roles) with a GenericOIDC connection that does not ask for `groups`.
Provider users: any login; `grace` is Grace Hopper in groups navy + cobol, `ada` is Ada Lovelace
in groups analysts + staff.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlparse

import httpx2
import pytest
from workos import BadRequestError, WorkOSClient
from workos.public_client import create_public_client


def need(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} must be set (run through tests/tests/sso_oidc_sdk.rs)")
    return value


BASE_URL = need("IDBRIDGE_URL")
API_KEY = need("IDBRIDGE_API_KEY")
CLIENT_ID = need("IDBRIDGE_CLIENT_ID")
CALLBACK = need("IDBRIDGE_SSO_CALLBACK")
ISSUER = need("IDBRIDGE_OIDC_ISSUER")
ORG_A = need("IDBRIDGE_OIDC_ORG_A")
CONN_A = need("IDBRIDGE_OIDC_CONN_A")
ORG_B = need("IDBRIDGE_OIDC_ORG_B")
CONN_B = need("IDBRIDGE_OIDC_CONN_B")
ORG_C = need("IDBRIDGE_OIDC_ORG_C")
CONN_C = need("IDBRIDGE_OIDC_CONN_C")

REPO = Path(__file__).resolve().parents[2]
OPENAPI_CHECK = REPO / "tests" / "js" / "openapi_check.mjs"

# Every /sso/token and /sso/profile response the SDK received: (path, method, status, text).
RECEIVED: list[tuple[str, str, int, str]] = []


def _record(response: httpx2.Response) -> None:
    path = response.request.url.path
    if path in ("/sso/token", "/sso/profile"):
        response.read()
        RECEIVED.append((path, response.request.method.lower(), response.status_code, response.text))


def last_received(path: str) -> tuple[int, dict]:
    hits = [r for r in RECEIVED if r[0] == path]
    assert hits, f"the SDK made no {path} request"
    _, _, status, text = hits[-1]
    return status, json.loads(text)


def validate(path: str, method: str, status: int, body: dict) -> None:
    """Checks a body against the WorkOS OpenAPI spec; fails the test on any mismatch."""
    out = subprocess.run(
        ["node", str(OPENAPI_CHECK), path, method, str(status)],
        input=json.dumps(body),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"{method} {path} {status} vs the spec:\n{out.stderr}{out.stdout}"


def sdk_http() -> httpx2.Client:
    return httpx2.Client(event_hooks={"response": [_record]}, trust_env=False, timeout=30)


@pytest.fixture(scope="module")
def client() -> WorkOSClient:
    return WorkOSClient(
        api_key=API_KEY, client_id=CLIENT_ID, base_url=BASE_URL, max_retries=0, http_client=sdk_http()
    )


class Browser:
    """One browser: an httpx2 client with a cookie jar; redirects are followed here, so every
    hop is seen and the trip stops at the app's callback (which nothing listens on)."""

    def __init__(self) -> None:
        self.http = httpx2.Client(follow_redirects=False, trust_env=False, timeout=30)
        self.visited: list[str] = []
        # How many times the provider showed its sign-in form.
        self.sign_ins = 0

    def send(self, method: str, url: str, form: dict | None = None) -> httpx2.Response:
        self.visited.append(url)
        return self.http.request(method, url, data=form)

    def run(self, url: str, login: str, abort: bool = False) -> str:
        """From the SDK's authorization URL to the app's callback URL: signs in at the provider
        as `login` and consents, or presses the provider's Cancel link (`abort`)."""
        at = url
        r = self.send("GET", at)
        for _ in range(25):
            if r.is_redirect:
                nxt = urljoin(at, r.headers["location"])
                if nxt.startswith(CALLBACK):
                    return nxt
                at = nxt
                r = self.send("GET", at)
                continue
            assert r.status_code == 200, f"unexpected {r.status_code} at {at}: {r.text}"
            html = r.text
            if abort:
                href = attr(html, "href", lambda v: "/abort" in v)
                assert href, f"no Cancel link at {at}"
                at = urljoin(at, href)
                r = self.send("GET", at)
                continue
            action = attr(html, "action")
            assert action, f"no form at {at}: {html}"
            if 'name="prompt" value="login"' in html:
                self.sign_ins += 1
                form = {"prompt": "login", "login": login, "password": "any"}
            else:
                form = {"prompt": "consent"}
            at = urljoin(at, action)
            r = self.send("POST", at, form)
        raise AssertionError("too many steps without reaching the app's callback:\n" + "\n".join(self.visited))


def attr(html: str, name: str, ok=lambda v: True) -> str | None:
    for m in re.finditer(rf'{name}="([^"]*)"', html):
        value = m.group(1).replace("&amp;", "&")
        if ok(value):
            return value
    return None


# The query of the provider authorization request of the last login().
LAST_AUTH: dict[str, list[str]] = {}


def login(url: str, user: str, abort: bool = False, browser: Browser | None = None) -> dict[str, str]:
    """Logs in; returns the callback's query after checking the trip went through the provider
    with PKCE (S256), a nonce, a state and our callback as redirect_uri."""
    browser = browser or Browser()
    start = len(browser.visited)
    back = urlparse(browser.run(url, user, abort))
    assert f"{back.scheme}://{back.netloc}{back.path}" == CALLBACK
    auth = [urlparse(v) for v in browser.visited[start:]]
    auth = [u for u in auth if f"{u.scheme}://{u.netloc}" == ISSUER and u.path == "/auth"]
    assert auth, "the browser never reached the provider:\n" + "\n".join(browser.visited)
    aq = parse_qs(auth[0].query)
    assert aq["code_challenge_method"] == ["S256"]
    assert aq.get("nonce"), "a nonce"
    assert aq.get("state"), "a provider state"
    assert aq["redirect_uri"] == [f"{BASE_URL}/sso/oidc/callback"]
    LAST_AUTH.clear()
    LAST_AUTH.update(aq)
    q = parse_qs(back.query)
    assert all(len(v) == 1 for v in q.values()), q
    return {k: v[0] for k, v in q.items()}


def slugs(roles) -> list[str]:
    return [r.slug for r in roles or []]


def test_generic_oidc_by_connection(client):
    url = client.sso.get_authorization_url(connection=CONN_A, redirect_uri=CALLBACK, state="py-oidc-state")
    assert url.startswith(f"{BASE_URL}/sso/authorize?")
    q = login(url, "grace")
    assert "error" not in q, q
    assert q["state"] == "py-oidc-state"
    code = q["code"]

    resp = client.sso.get_profile_and_token(code=code)
    assert resp.token_type == "Bearer"
    assert resp.expires_in > 0
    p = resp.profile
    assert p.id.startswith("prof_")
    assert p.email == "grace@example.com"
    assert p.first_name == "Grace"
    assert p.last_name == "Hopper"
    assert p.name == "Grace Hopper"
    assert p.idp_id == "grace"  # the provider's sub
    assert str(p.connection_type.value) == "GenericOIDC"
    assert p.connection_id == CONN_A
    assert p.organization_id == ORG_A
    assert p.groups == ["navy", "cobol"]
    # Multiple-roles mode: every mapped role, best priority first; `role` is the first.
    assert p.role is not None and p.role.slug == "admiral"
    assert slugs(p.roles) == ["admiral", "engineer"]
    assert p.raw_attributes == {}

    status, body = last_received("/sso/token")
    assert status == 200
    validate("/sso/token", "post", 200, body)
    assert "raw_attributes" in body["profile"]

    again = client.sso.get_profile(access_token=resp.access_token)
    assert again.id == p.id
    assert slugs(again.roles) == ["admiral", "engineer"]
    status, body = last_received("/sso/profile")
    validate("/sso/profile", "get", status, body)

    # The code was single-use.
    with pytest.raises(BadRequestError):
        client.sso.get_profile_and_token(code=code)
    conn = client.sso.get_connection(CONN_A)
    assert str(conn.connection_type.value) == "GenericOIDC"
    assert conn.organization_id == ORG_A


def test_organization_selector_default_role(client):
    url = client.sso.get_authorization_url(
        organization=ORG_A, redirect_uri=CALLBACK, state="py-org-a", login_hint="ada"
    )
    q = login(url, "ada")
    assert LAST_AUTH["login_hint"] == ["ada"], "login_hint is passed on to the provider"
    assert "error" not in q, q
    assert q["state"] == "py-org-a"
    p = client.sso.get_profile_and_token(code=q["code"]).profile
    assert p.email == "ada@example.com"
    assert (p.first_name, p.last_name) == ("Ada", "Lovelace")
    assert p.idp_id == "ada"
    assert p.connection_id == CONN_A
    assert p.organization_id == ORG_A
    assert p.groups == ["analysts", "staff"]
    # None of her groups is mapped in org A: the default role.
    assert p.role is not None and p.role.slug == "member"
    assert slugs(p.roles) == ["member"]
    validate("/sso/token", "post", 200, last_received("/sso/token")[1])


def test_okta_oidc_by_organization_single_role(client):
    url = client.sso.get_authorization_url(organization=ORG_B, redirect_uri=CALLBACK, state="py-org-b")
    q = login(url, "grace")
    assert q["state"] == "py-org-b"
    p = client.sso.get_profile_and_token(code=q["code"]).profile
    assert str(p.connection_type.value) == "OktaOIDC"
    assert p.connection_id == CONN_B
    assert p.organization_id == ORG_B
    assert p.idp_id == "grace"
    assert p.groups == ["navy", "cobol"]
    assert p.role is not None and p.role.slug == "lead"
    assert slugs(p.roles) == ["lead"]
    validate("/sso/token", "post", 200, last_received("/sso/token")[1])

    q = login(client.sso.get_authorization_url(connection=CONN_B, redirect_uri=CALLBACK, state="py-b-ada"), "ada")
    p = client.sso.get_profile_and_token(code=q["code"]).profile
    assert p.role is not None and p.role.slug == "analyst"
    assert slugs(p.roles) == ["analyst"]


def test_pkce_public_client(client):
    public = create_public_client(client_id=CLIENT_ID, base_url=BASE_URL, http_client=sdk_http())
    started = client.sso.get_authorization_url_with_pkce(connection=CONN_A, redirect_uri=CALLBACK)
    q = login(started["url"], "grace")
    assert q["state"] == started["state"]
    p = public.sso.get_profile_and_token_pkce(code=q["code"], code_verifier=started["code_verifier"]).profile
    assert p.email == "grace@example.com"
    assert slugs(p.roles) == ["admiral", "engineer"]

    # Another verifier is refused, and the failed attempt burns the code.
    other = client.sso.get_authorization_url_with_pkce(connection=CONN_A, redirect_uri=CALLBACK)
    code = login(other["url"], "grace")["code"]
    with pytest.raises(BadRequestError):
        public.sso.get_profile_and_token_pkce(code=code, code_verifier=secrets.token_urlsafe(32))
    with pytest.raises(BadRequestError):
        public.sso.get_profile_and_token_pkce(code=code, code_verifier=other["code_verifier"])


def test_provider_access_denied(client):
    url = client.sso.get_authorization_url(connection=CONN_A, redirect_uri=CALLBACK, state="py-denied")
    q = login(url, "grace", abort=True)
    assert q.get("error") == "access_denied", q
    assert q.get("error_description")
    assert q["state"] == "py-denied"
    assert "code" not in q

    url = client.sso.get_authorization_url(organization=ORG_B, redirect_uri=CALLBACK, state="py-denied-b")
    q = login(url, "grace", abort=True)
    assert q.get("error") == "access_denied", q
    assert q["state"] == "py-denied-b"
    assert "code" not in q


def test_provider_scopes_comma_joined(client):
    q = login(client.sso.get_authorization_url(connection=CONN_C, redirect_uri=CALLBACK, state="py-c"), "grace")
    assert LAST_AUTH["scope"] == ["openid profile email"]
    p = client.sso.get_profile_and_token(code=q["code"]).profile
    assert p.organization_id == ORG_C
    assert not p.groups, "no groups without the groups scope"
    assert p.role is None, "org C has no roles"

    url = client.sso.get_authorization_url(
        connection=CONN_C, redirect_uri=CALLBACK, state="py-c-scopes", provider_scopes=["groups", "email"]
    )
    assert "provider_scopes=groups%2Cemail" in url
    q = login(url, "grace")
    assert q["state"] == "py-c-scopes"
    assert LAST_AUTH["scope"] == ["openid profile email groups"]
    p = client.sso.get_profile_and_token(code=q["code"]).profile
    assert p.groups == ["navy", "cobol"]
    validate("/sso/token", "post", 200, last_received("/sso/token")[1])


def test_prompt_login_forces_a_new_sign_in(client):
    browser = Browser()
    q = login(client.sso.get_authorization_url(connection=CONN_A, redirect_uri=CALLBACK, state="py-p1"), "grace",
              browser=browser)
    assert client.sso.get_profile_and_token(code=q["code"]).profile.idp_id == "grace"
    assert browser.sign_ins == 1

    # The provider's session carries the next login through without a sign-in form ...
    q = login(client.sso.get_authorization_url(connection=CONN_A, redirect_uri=CALLBACK, state="py-p2"), "ada",
              browser=browser)
    assert browser.sign_ins == 1
    assert "prompt" not in LAST_AUTH
    assert client.sso.get_profile_and_token(code=q["code"]).profile.idp_id == "grace"

    # ... unless the app asks for prompt=login: the provider shows its sign-in form again.
    # (Same account: signing in as another one makes oidc-provider end its session first.)
    q = login(
        client.sso.get_authorization_url(connection=CONN_A, redirect_uri=CALLBACK, state="py-p3", prompt="login"),
        "grace",
        browser=browser,
    )
    assert LAST_AUTH["prompt"] == ["login"]
    assert browser.sign_ins == 2
    assert q["state"] == "py-p3"
    assert client.sso.get_profile_and_token(code=q["code"]).profile.idp_id == "grace"
