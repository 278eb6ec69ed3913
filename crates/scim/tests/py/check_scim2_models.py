"""Cross-checks idbridge-scim's documents against scim2-models, an independent SCIM library
(the one scim2-tester is built on).

Input: a JSON file written by tests/discovery_docs.rs. Exits non-zero with a message per
problem found: a document scim2-models refuses, or a schema attribute whose name, type or
multiValued flag differs from scim2-models' own definition of the RFC 7643 schemas.
"""

import json
import sys

from scim2_models import (
    Context,
    EnterpriseUser,
    Error,
    Group,
    ListResponse,
    PatchOp,
    ResourceType,
    Schema,
    ServiceProviderConfig,
    User,
)

problems = []


def check(label, fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - every failure is a finding
        problems.append(f"{label}: {e}")


def attrs(schema_dict):
    return {a["name"]: a for a in schema_dict.get("attributes", [])}


def compare(ours, theirs, where):
    for name, ref in theirs.items():
        mine = ours.get(name)
        if mine is None:
            problems.append(f"{where}: attribute {name} missing")
            continue
        for key in ("type", "multiValued"):
            if mine.get(key) != ref.get(key):
                problems.append(f"{where}.{name}: {key} is {mine.get(key)!r}, scim2-models says {ref.get(key)!r}")
        if ref.get("subAttributes"):
            compare(attrs({"attributes": mine.get("subAttributes", [])}), attrs({"attributes": ref["subAttributes"]}), f"{where}.{name}")


docs = json.load(open(sys.argv[1]))
resp = Context.RESOURCE_QUERY_RESPONSE

reference = {
    "urn:ietf:params:scim:schemas:core:2.0:User": User,
    "urn:ietf:params:scim:schemas:core:2.0:Group": Group,
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": EnterpriseUser,
}
seen = set()
for doc in docs["schemas"]:
    check(f"Schema {doc.get('id')}", lambda doc=doc: Schema.model_validate(doc, scim_ctx=resp))
    model = reference.get(doc.get("id"))
    if model is None:
        problems.append(f"unexpected schema {doc.get('id')}")
        continue
    seen.add(doc["id"])
    theirs = model.to_schema().model_dump(mode="json", scim_ctx=resp)
    compare(attrs(doc), attrs(theirs), doc["id"])
for missing in set(reference) - seen:
    problems.append(f"schema {missing} not served")

for doc in docs["resource_types"]:
    check(f"ResourceType {doc.get('id')}", lambda doc=doc: ResourceType.model_validate(doc, scim_ctx=resp))
check("ServiceProviderConfig", lambda: ServiceProviderConfig.model_validate(docs["spc"], scim_ctx=resp))
check("User", lambda: User[EnterpriseUser].model_validate(docs["user"], scim_ctx=resp))
check("Group", lambda: Group.model_validate(docs["group"], scim_ctx=resp))
check("ListResponse", lambda: ListResponse[User[EnterpriseUser]].model_validate(docs["list"], scim_ctx=Context.SEARCH_RESPONSE))
check("Error", lambda: Error.model_validate(docs["error"]))
check("PatchOp", lambda: PatchOp[User].model_validate(docs["patch"], scim_ctx=Context.RESOURCE_PATCH_REQUEST))



def check_flags():
    spc = ServiceProviderConfig.model_validate(docs["spc"], scim_ctx=resp)
    if not (spc.patch.supported and spc.filter.supported and spc.etag.supported) or spc.bulk.supported:
        raise ValueError("flags differ from the design")
    err = Error.model_validate(docs["error"])
    if err.status != 409 or err.scim_type != "uniqueness":
        raise ValueError(f"parsed as status={err.status!r} scimType={err.scim_type!r}")


check("ServiceProviderConfig and Error flags", check_flags)

for p in problems:
    print(p, file=sys.stderr)
sys.exit(1 if problems else 0)
