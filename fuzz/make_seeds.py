#!/usr/bin/env python3
"""Writes the hand-made seeds of fuzz/corpus/ (the signed SAML seeds come from
`IDBRIDGE_WRITE_SEEDS=1 cargo test -p idbridge-fuzz-targets --test corpus`). Seeds come from
the test fixtures: SCIM IdP replays (crates/scim/tests/fixtures), the SFTP test deliveries, and
BER built the way crates/ldap/tests builds it. Idempotent."""
import glob, json, os, re, struct

ROOT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(ROOT)

def put(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)

# --- SCIM: filters from the filter tests and Entra's replay; PATCH and resource bodies from
# the Okta/Entra fixtures.
filters = set()
for path in glob.glob(os.path.join(REPO, "crates/scim/tests/*.rs")) + [os.path.join(REPO, "crates/scim/src/filter.rs")]:
    for m in re.finditer(r'"((?:[^"\\]|\\.)*\b(?:eq|ne|co|sw|ew|gt|ge|lt|le|pr)\b(?:[^"\\]|\\.)*)"', open(path).read()):
        s = m.group(1).encode().decode("unicode_escape")
        if 3 < len(s) < 300:
            filters.add(s)
for e in json.load(open(os.path.join(REPO, "crates/scim/tests/fixtures/entra/filters.json"))):
    filters.add(e["filter"])
filters |= {'emails[type eq "work" and value co "@example.com"] or not (userName sw "a")',
            'members[value eq "u1"]', 'name.givenName', 'emails[type eq "work"].value',
            'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "X"',
            'meta.lastModified gt "2026-01-01T00:00:00Z" and active eq true', 'title pr'}
for i, f in enumerate(sorted(filters)):
    put("scim_filter", f"{i:03}", f)

for path in sorted(glob.glob(os.path.join(REPO, "crates/scim/tests/fixtures/*/*.json"))):
    name = os.path.basename(os.path.dirname(path)) + "-" + os.path.basename(path)
    body = open(path, "rb").read()
    try:
        v = json.loads(body)
    except ValueError:
        continue
    if isinstance(v, dict) and "Operations" in v:
        put("scim_patch", name, body)
    elif isinstance(v, dict):
        put("scim_resource", name, body)
put("scim_patch", "replace-no-path", json.dumps({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "value": {"active": False, "name.givenName": "B", "emails[type eq \"work\"].value": "b@x"}}]}))
put("scim_patch", "remove-filter", json.dumps({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "remove", "path": "members[value eq \"directory_user_01BOB\"]"}, {"op": "add", "path": "emails", "value": [{"value": "c@x", "type": "other"}]}]}))

# --- SFTP CSV: users NUL groups NUL user_groups.
users = ("user_id,first_name,last_name,email,department_name,job_title,badge\n"
         "u1,Ada,Lovelace,ada@foo-corp.com,Engineering,Engineer,B-1\n"
         "u2,Alan,Turing,alan@foo-corp.com,Research,Scientist,B-2\n"
         "u3,Grace,Hopper,grace@foo-corp.com,Engineering,Admiral,B-3\n")
groups = "group_name,description\nEngineering,Builders\nResearch,Thinkers\n"
user_groups = "group_name,user_id\nEngineering,u1\nEngineering,u3\nResearch,u2\n"
put("sftp_csv", "full", users + "\0" + groups + "\0" + user_groups)
put("sftp_csv", "users-only", users)
put("sftp_csv", "quoted", 'user_id,first_name,last_name,email\n"u,1","A ""B""",C,a@b.c\r\nu2,D,E,d@e.f\n')

# --- LDAP: BER helpers (definite lengths, as servers send).
def tlv(tag, content):
    n = len(content)
    if n < 0x80:
        ln = bytes([n])
    else:
        b = n.to_bytes((n.bit_length() + 7) // 8, "big")
        ln = bytes([0x80 | len(b)]) + b
    return bytes([tag]) + ln + content
seq = lambda *p: tlv(0x30, b"".join(p))
octets = lambda s: tlv(0x04, s if isinstance(s, bytes) else s.encode())
integer = lambda v: tlv(0x02, v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big"))
enum = lambda v: tlv(0x0A, bytes([v]))
boolean = lambda v: tlv(0x01, b"\xff" if v else b"\x00")
uuid = bytes(range(16))

paged = seq(integer(100), octets(b"cookie-1"))
put("ldap_controls", "paged", b"\x00" + paged)
put("ldap_controls", "sync-state", b"\x01" + seq(enum(1), octets(uuid), octets(b"rid=001,csn=1")))
put("ldap_controls", "sync-done", b"\x02" + seq(octets(b"rid=001,csn=2"), boolean(True)))
sync_info_value = tlv(0xA3, octets(b"c") + boolean(False) + tlv(0x31, octets(uuid) + octets(bytes(range(16, 32)))))
intermediate = tlv(0x79, tlv(0x80, b"1.3.6.1.4.1.4203.1.9.1.4") + tlv(0x81, sync_info_value))
put("ldap_controls", "sync-info", b"\x03" + intermediate)
put("ldap_controls", "sync-info-newcookie", b"\x03" + tlv(0x79, tlv(0x80, b"1.3.6.1.4.1.4203.1.9.1.4") + tlv(0x81, tlv(0x80, b"rid=1"))))

def message(msgid, op, controls=None):
    return seq(integer(msgid), op, *( [tlv(0xA0, b"".join(controls))] if controls else []))
ldap_result = lambda app, rc=0, dn="", text="": tlv(app, enum(rc) + octets(dn) + octets(text))
control = lambda oid, value, crit=None: seq(octets(oid), *([boolean(crit)] if crit is not None else []), octets(value))
entry = tlv(0x64, octets("uid=ada,ou=people,dc=example,dc=com") + seq(
    seq(octets("cn"), tlv(0x31, octets("Ada Lovelace"))),
    seq(octets("objectClass"), tlv(0x31, octets("inetOrgPerson") + octets("person"))),
    seq(octets("jpegPhoto"), tlv(0x31, octets(b"\xff\xd8\xff"))),
))
put("ldap_message", "bind-response", message(1, ldap_result(0x61)))
put("ldap_message", "search", message(2, entry, [control("1.3.6.1.4.1.4203.1.9.1.2", seq(enum(1), octets(uuid)))])
    + message(2, tlv(0x73, octets("ldap://other.example.com/dc=example,dc=com")))
    + message(2, ldap_result(0x65), [control("1.2.840.113556.1.4.319", paged, False)]))
put("ldap_message", "sync-info", message(3, intermediate))
put("ldap_message", "refresh-done", message(3, ldap_result(0x65), [control("1.3.6.1.4.1.4203.1.9.1.3", seq(octets(b"rid=1"), boolean(True)))]))
put("ldap_message", "extended-notice", message(0, tlv(0x78, enum(52) + octets("") + octets("server going down") + tlv(0x8A, b"1.3.6.1.4.1.1466.20036"))))
put("ldap_message", "ad-notice-quirk", seq(integer(0), tlv(0x78, enum(52) + octets("") + octets("bye")), tlv(0x8A, b"1.3.6.1.4.1.1466.20036")))
put("ldap_message", "result-with-referral", message(4, tlv(0x65, enum(10) + octets("") + octets("see") + tlv(0xA3, octets("ldap://b/")))))

# --- API: first byte = route index (crates/fuzz-targets/src/api.rs ROUTES), then the body.
routes = {
    0: json.dumps({"name": "Acme", "domains": ["acme.example.test"]}),
    1: json.dumps({"name": "Acme 2", "domain_data": [{"domain": "acme2.example.test", "state": "verified"}]}),
    2: json.dumps({"organization_id": "org_0", "name": "HR", "type": "sftp", "settings": {"deactivation": "keep_inactive"}}),
    3: json.dumps({"roles": [{"slug": "admin", "name": "Admin", "priority": 1}], "default_role": "admin"}),
    4: json.dumps({"mappings": [{"idp_group": "Engineering", "role": "admin"}]}),
    5: json.dumps({"endpoint_url": "https://h.example.test/x", "events": ["dsync.user.created"]}),
    6: json.dumps({"status": "disabled"}),
    7: json.dumps({"organization_id": "org_0", "name": "OIDC", "connection_type": "GenericOIDC", "oidc_options": {"issuer": "https://op.example.test", "client_id": "c", "client_secret": "s"}}),
    8: "{}",
    9: "grant_type=authorization_code&client_id=client_1&client_secret=sk&code=abc",
    10: "SAMLResponse=PHNhbWxwOlJlc3BvbnNlLz4%3D&RelayState=x",
    11: json.dumps({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "bob@fuzz.example.test", "name": {"givenName": "Bob", "familyName": "F"}, "emails": [{"value": "bob@fuzz.example.test"}], "active": True}),
    12: json.dumps({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "alice@fuzz.example.test", "active": False}),
    13: json.dumps({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "active", "value": False}]}),
    14: json.dumps({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Sales"}),
    15: json.dumps({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "add", "path": "members", "value": [{"value": "nope"}]}]}),
    16: json.dumps({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": []}),
    17: "limit=2&order=asc&after=org_01",
    18: "directory=directory_0&limit=5",
    19: "events=dsync.user.created&limit=3",
    20: "client_id=client_1&redirect_uri=https%3A%2F%2Fapp%2Fcb&response_type=code&organization=org_1&state=s",
    21: 'filter=userName%20eq%20%22alice%40fuzz.example.test%22&startIndex=1&count=5',
    22: 'filter=displayName%20eq%20%22Engineering%22&excludedAttributes=members',
}
for i, body in routes.items():
    put("api_json", f"{i:02}", bytes([i]) + body.encode())
