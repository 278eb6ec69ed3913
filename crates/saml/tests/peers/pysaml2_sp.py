"""Independent SP for the IdP-side interop tests: pysaml2 (signatures through xmlsec1, schema
validation through xmlschema) imports idbridge's IdP metadata, then parses a login
Response ("parse"), creates an AuthnRequest ("request", Redirect or POST binding), or prints
its own SP metadata ("metadata").
Reads a JSON config on stdin, prints JSON on stdout."""
import base64
import json
import os
import sys
import tempfile

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256
import saml2.xml.schema

cfg = json.load(sys.stdin)
tmp = tempfile.mkdtemp()


def write(name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


sp_conf = {
    "entityid": cfg["sp"],
    "metadata": {"local": [write("idp.xml", cfg["idpMetadata"])]},
    "service": {"sp": {
        "endpoints": {"assertion_consumer_service": [(cfg["acs"], BINDING_HTTP_POST)]},
        "allow_unsolicited": cfg.get("allowUnsolicited", False),
        "want_response_signed": cfg.get("wantResponseSigned", False),
        "want_assertions_signed": cfg.get("wantAssertionsSigned", True),
        "authn_requests_signed": cfg.get("signRequests", False),
        "name_id_format": [cfg.get("nameIdFormat", "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress")],
    }},
    "allow_unknown_attributes": True,
    "xmlsec_binary": "/usr/bin/xmlsec1",
}
if cfg.get("spSignKey"):
    sp_conf["key_file"] = write("sp-sign.key", cfg["spSignKey"])
    sp_conf["cert_file"] = write("sp-sign.crt", cfg["spSignCert"])
if cfg.get("spEncKey"):
    sp_conf["encryption_keypairs"] = [{
        "key_file": write("sp-enc.key", cfg["spEncKey"]),
        "cert_file": write("sp-enc.crt", cfg["spEncCert"]),
    }]
conf = SPConfig()
conf.load(sp_conf)
client = Saml2Client(config=conf)

if cfg["command"] == "parse":
    xml = base64.b64decode(cfg["samlResponse"])
    # The XSD check pysaml2 runs on signed documents, explicitly on the whole Response and on
    # the IdP metadata too.
    saml2.xml.schema.validate(xml.decode())
    saml2.xml.schema.validate(cfg["idpMetadata"].split("?>", 1)[1].strip())
    outstanding = {cfg["reqId"]: "/"} if cfg.get("reqId") else {}
    resp = client.parse_authn_request_response(cfg["samlResponse"], BINDING_HTTP_POST, outstanding=outstanding)
    if resp is None:
        raise SystemExit("pysaml2 returned no response")
    assertion = resp.assertion
    statement = assertion.authn_statement[0]
    out = {
        "issuer": resp.issuer(),
        "nameId": resp.name_id.text,
        "nameIdFormat": resp.name_id.format,
        "inResponseTo": resp.in_response_to,
        "sessionIndex": statement.session_index,
        "authnContext": statement.authn_context.authn_context_class_ref.text,
        "audience": [a.text for ar in assertion.conditions.audience_restriction for a in ar.audience],
        "ava": resp.get_identity(),
    }
    sys.stdout.write(json.dumps(out))
elif cfg["command"] == "metadata":
    from saml2.metadata import entity_descriptor
    sys.stdout.write(json.dumps({"metadata": str(entity_descriptor(conf))}))
elif cfg["command"] == "request":
    binding = BINDING_HTTP_REDIRECT if cfg["binding"] == "redirect" else BINDING_HTTP_POST
    sign = cfg.get("signRequests", False)
    kwargs = {"sign": sign}
    if sign:
        kwargs.update({"sigalg": cfg.get("sigAlg", SIG_RSA_SHA256), "digest_alg": DIGEST_SHA256})
    req_id, info = client.prepare_for_authenticate(
        entityid=cfg["idp"], relay_state=cfg.get("relayState", ""), binding=binding, **kwargs)
    out = {"id": req_id}
    if binding == BINDING_HTTP_REDIRECT:
        out["location"] = dict(info["headers"])["Location"]
    else:
        # The POST binding's form: pick SAMLRequest and RelayState out of the HTML.
        import re
        html = info["data"]
        out["SAMLRequest"] = re.search(r'name="SAMLRequest" value="([^"]*)"', html).group(1)
        m = re.search(r'name="RelayState" value="([^"]*)"', html)
        out["RelayState"] = m.group(1) if m else None
    sys.stdout.write(json.dumps(out))
else:
    raise SystemExit("unknown command")
