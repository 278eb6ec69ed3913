"""Webhook deliveries verified with the official WorkOS Python SDK (workos 10).

Run by tests/tests/webhooks_e2e.rs against a fresh `idbridge serve` whose delivery worker
runs; needs IDBRIDGE_URL, IDBRIDGE_API_KEY and IDBRIDGE_CLIENT_ID. A receiver on 127.0.0.1
records each delivery; every one must pass `client.webhooks.verify_event` (which splits the
header on ", " and deserializes the event strictly) and arrive in the log's order.

With IDBRIDGE_WEBHOOK_CAPTURE (a JSON file of {body, sigHeader} captured by the Node receiver
in the outage test) and IDBRIDGE_WEBHOOK_SECRET, the captured deliveries are verified too.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from workos import WorkOSClient

BASE_URL = os.environ["IDBRIDGE_URL"]
API_KEY = os.environ["IDBRIDGE_API_KEY"]
CLIENT_ID = os.environ["IDBRIDGE_CLIENT_ID"]
TAG = secrets.token_hex(4)
ORG_EVENTS = ["organization.created", "organization.updated", "organization.deleted"]


class Receiver:
    def __init__(self) -> None:
        self.deliveries: list[tuple[bytes, str]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.deliveries.append(
                        (body, self.headers.get("WorkOS-Signature", ""))
                    )
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def snapshot(self) -> list[tuple[bytes, str]]:
        with self.lock:
            return list(self.deliveries)


@pytest.fixture(scope="module")
def client() -> WorkOSClient:
    return WorkOSClient(
        api_key=API_KEY, client_id=CLIENT_ID, base_url=BASE_URL, max_retries=0
    )


def test_deliveries_verify_with_the_python_sdk(client: WorkOSClient) -> None:
    receiver = Receiver()
    try:
        endpoint = client.webhooks.create_webhook_endpoint(
            endpoint_url=receiver.url, events=ORG_EVENTS
        )
        assert endpoint.id.startswith("we_")
        assert endpoint.secret

        org = client.organizations.create_organization(name=f"Py hook {TAG}")
        client.organizations.update_organization(org.id, name=f"Py hook {TAG} 2")
        client.organizations.delete_organization(org.id)

        page = client.events.list_events(
            events=ORG_EVENTS, organization_id=org.id, limit=100
        )
        expected = [e.id for e in page.data]
        assert len(expected) == 3

        deadline = time.time() + 30
        seen: list[str] = []
        while time.time() < deadline:
            seen = []
            for body, sig in receiver.snapshot():
                event = client.webhooks.verify_event(
                    event_body=body, event_signature=sig, secret=endpoint.secret
                )
                if event.id in expected and event.id not in seen:
                    seen.append(event.id)
            if len(seen) == len(expected):
                break
            time.sleep(0.1)
        assert seen == expected, "each event once, in log order"

        # A wrong secret must fail: the check above is not vacuous.
        body, sig = receiver.snapshot()[0]
        with pytest.raises(ValueError):
            client.webhooks.verify_event(
                event_body=body, event_signature=sig, secret="whsec_wrong"
            )
        # verify_header: the same check without parsing the event.
        client.webhooks.verify_header(event_body=body, event_signature=sig, secret=endpoint.secret)
        with pytest.raises(ValueError):
            client.webhooks.verify_header(event_body=body, event_signature=sig, secret="whsec_wrong")

        # list_webhook_endpoints and update_webhook_endpoint through the SDK.
        listed = client.webhooks.list_webhook_endpoints(limit=100)
        assert endpoint.id in [e.id for e in listed.data]
        disabled = client.webhooks.update_webhook_endpoint(endpoint.id, status="disabled")
        assert str(getattr(disabled.status, "value", disabled.status)) == "disabled"
        again = [e for e in client.webhooks.list_webhook_endpoints(limit=100).data if e.id == endpoint.id]
        assert str(getattr(again[0].status, "value", again[0].status)) == "disabled"
        client.webhooks.delete_webhook_endpoint(endpoint.id)
    finally:
        receiver.server.shutdown()


def test_captured_deliveries_verify() -> None:
    capture = os.environ.get("IDBRIDGE_WEBHOOK_CAPTURE")
    secret = os.environ.get("IDBRIDGE_WEBHOOK_SECRET")
    if not capture or not secret:
        pytest.skip("no capture from the outage test")
    with open(capture, encoding="utf-8") as f:
        deliveries = json.load(f)
    assert deliveries, "the capture is empty"
    client = WorkOSClient(api_key=API_KEY, client_id=CLIENT_ID, base_url=BASE_URL)
    for d in deliveries:
        event = client.webhooks.verify_event(
            event_body=d["body"].encode("utf-8"),
            event_signature=d["sigHeader"],
            secret=secret,
            # The capture may be a few minutes old by the time this runs.
            tolerance=3600,
        )
        assert event.id == json.loads(d["body"])["id"]
