"""Organization domains through the official WorkOS Python SDK (workos 10).

create/get/verify/delete_organization_domain against a real `idbridge serve` whose DNS
verification asks a real DNS server (dnsmasq) started here on a free loopback port. The raw
bodies the SDK received are validated against @workos/openapi-spec (tests/js/openapi_check.mjs).
Run by tests/tests/organization_domains_sdk.rs; needs IDBRIDGE_URL, IDBRIDGE_API_KEY and
IDBRIDGE_CLIENT_ID.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx2
import pytest
from workos import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    ServerError,
    WorkOSClient,
)

BASE_URL = os.environ["IDBRIDGE_URL"]
API_KEY = os.environ["IDBRIDGE_API_KEY"]
CLIENT_ID = os.environ["IDBRIDGE_CLIENT_ID"]
TAG = secrets.token_hex(4)
ZONE = "idbridge.test"

REPO = Path(__file__).resolve().parents[2]
OPENAPI_CHECK = REPO / "tests" / "js" / "openapi_check.mjs"
SPEC_PATHS = {
    ("post", 2): "/organization_domains",
    ("get", 2): "/organization_domains/{id}",
    ("delete", 2): "/organization_domains/{id}",
    ("post", 3): "/organization_domains/{id}/verify",
}
# Every response the SDK received from /organization_domains*: (spec path, method, status, text).
RECEIVED: list[tuple[str, str, int, str]] = []


def _record(response: httpx2.Response) -> None:
    parts = [p for p in response.request.url.path.split("/") if p]
    if not parts or parts[0] != "organization_domains":
        return
    method = response.request.method.lower()
    spec = SPEC_PATHS.get((method, len(parts)))
    if spec is None and method == "post" and len(parts) == 1:
        spec = "/organization_domains"
    if spec is None and len(parts) == 2:
        spec = "/organization_domains/{id}"
    response.read()
    RECEIVED.append((spec, method, response.status_code, response.text))


def validate(path: str, method: str, status: int, text: str) -> None:
    out = subprocess.run(
        ["node", str(OPENAPI_CHECK), path, method, str(status)],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"{method} {path} {status} vs the spec:\n{out.stderr}{out.stdout}"


@pytest.fixture(scope="module")
def client() -> WorkOSClient:
    http = httpx2.Client(event_hooks={"response": [_record]}, trust_env=False, timeout=30)
    return WorkOSClient(
        api_key=API_KEY, client_id=CLIENT_ID, base_url=BASE_URL, max_retries=0, http_client=http
    )


def admin_dns(**body) -> dict:
    r = httpx2.put(
        f"{BASE_URL}/admin/dns",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
        trust_env=False,
    )
    assert r.status_code == 200, r.text
    return r.json()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dnsmasq:
    """dnsmasq on loopback answering for ZONE with exactly the given TXT records."""

    def __init__(self, records: list[tuple[str, str]]) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="idbridge-dns-")
        self.port = free_port()
        args = [
            "dnsmasq",
            "-k",
            f"--port={self.port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            f"--pid-file={self.dir.name}/pid",
            f"--local=/{ZONE}/",
            "--user=root",
        ] + [f"--txt-record={n},{v}" for n, v in records]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 5
        while time.time() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("dnsmasq did not start")

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.dir.cleanup()


def test_domains_verify_against_a_real_dns_server(client: WorkOSClient) -> None:
    org = client.organizations.create_organization(name=f"Py domains {TAG}")
    names = {n: f"{n}-py-{TAG}.{ZONE}" for n in ("good", "acme", "wrong", "absent")}
    doms = {
        n: client.organization_domains.create_organization_domain(domain=d, organization_id=org.id)
        for n, d in names.items()
    }
    for n, d in doms.items():
        assert d.domain == names[n]
        assert d.organization_id == org.id
        assert str(d.state.value) == "pending"
        assert str(d.verification_strategy.value) == "dns"
        assert d.verification_token and len(d.verification_token) == 25

    # The same domain again: 409.
    with pytest.raises(ConflictError):
        client.organization_domains.create_organization_domain(
            domain=names["good"], organization_id=org.id
        )

    got = client.organization_domains.get_organization_domain(doms["good"].id)
    assert got.id == doms["good"].id and got.verification_token == doms["good"].verification_token

    # A dead resolver: a clear 503 and nothing changed.
    admin_dns(resolver=f"127.0.0.1:{free_port()}", timeout_ms=300)
    with pytest.raises(ServerError) as e:
        client.organization_domains.verify_organization_domain(doms["good"].id)
    assert e.value.status_code == 503
    assert "dns_lookup_failed" in str(e.value) or "DNS lookup" in str(e.value)
    assert str(client.organization_domains.get_organization_domain(doms["good"].id).state.value) == "pending"

    dns = Dnsmasq(
        [
            (names["good"], f"verification_token={doms['good'].verification_token}"),
            (f"_acme-challenge.{names['acme']}", f"verification_token={doms['acme'].verification_token}"),
            (names["wrong"], "verification_token=someone-elses"),
        ]
    )
    try:
        admin_dns(resolver=dns.addr, timeout_ms=1000)
        verify = client.organization_domains.verify_organization_domain
        assert str(verify(doms["good"].id).state.value) == "verified"
        assert str(verify(doms["acme"].id).state.value) == "verified"
        assert str(verify(doms["wrong"].id).state.value) == "failed"
        assert str(verify(doms["absent"].id).state.value) == "pending"
        with pytest.raises(BadRequestError):
            verify(doms["good"].id)
    finally:
        dns.stop()

    org_after = client.organizations.get_organization(org.id)
    assert {d.domain: str(d.state.value) for d in org_after.domains} == {
        names["good"]: "verified",
        names["acme"]: "verified",
        names["wrong"]: "failed",
        names["absent"]: "pending",
    }

    client.organization_domains.delete_organization_domain(doms["absent"].id)
    with pytest.raises(NotFoundError):
        client.organization_domains.get_organization_domain(doms["absent"].id)

    # Every body the SDK received, validated against the spec where it documents the status.
    checked = 0
    for spec, method, status, text in RECEIVED:
        if spec and status in (200, 201, 400, 409) and text:
            validate(spec, method, status, text)
            checked += 1
    assert checked >= 10, RECEIVED
    assert any(s == 400 and json.loads(t)["code"] == "domain_already_verified" for _, _, s, t in RECEIVED)
