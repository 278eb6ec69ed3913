"""Runs scim2-tester's full check suite against a SCIM base URL.

Usage: run_scim2_tester.py BASE_URL TOKEN. Prints one line per check result and exits 1 when
any result is ERROR or CRITICAL (the project's acceptance bar for the SCIM endpoint).
"""

import sys

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

base_url, token = sys.argv[1], sys.argv[2]
client = SyncSCIMClient(Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30))
results = check_server(client)
bad = 0
for r in results:
    line = f"{r.status.name:<10} {r.resource_type or '-':<6} {r.title}: {r.reason}"
    print(line.replace("\n", " | "))
    if r.status in (Status.ERROR, Status.CRITICAL):
        bad += 1
print(f"{len(results)} results, {bad} ERROR/CRITICAL")
sys.exit(1 if bad or not results else 0)
