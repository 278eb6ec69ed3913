"""Independent IdP for single-logout interop over HTTP-POST: pysaml2 builds an IdP-initiated
LogoutRequest, signed in the XML (enveloped signature, RSA-SHA256 via xmlsec1) the way the
HTTP-POST binding carries it. Reads a JSON config on stdin
({idp, idpKey, idpCert, spMetadata, sp, destination, nameId, sessionIndex?}), prints
{"id", "samlRequest": <base64 XML>} on stdout."""
import base64
import json
import os
import sys
import tempfile

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.config import IdPConfig
from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NameID
from saml2.server import Server
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

cfg = json.load(sys.stdin)
tmp = tempfile.mkdtemp()


def write(name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


conf = IdPConfig()
conf.load({
    "entityid": cfg["idp"],
    "key_file": write("idp.key", cfg["idpKey"]),
    "cert_file": write("idp.crt", cfg["idpCert"]),
    "metadata": {"local": [write("sp.xml", cfg["spMetadata"])]},
    "service": {"idp": {"endpoints": {
        "single_sign_on_service": [("https://idp.example.test/sso", BINDING_HTTP_REDIRECT)],
        "single_logout_service": [("https://idp.example.test/slo", BINDING_HTTP_POST)],
    }, "name_id_format": [NAMEID_FORMAT_EMAILADDRESS]}},
    "xmlsec_binary": "/usr/bin/xmlsec1",
})
server = Server(config=conf)
req_id, request = server.create_logout_request(
    destination=cfg["destination"],
    issuer_entity_id=cfg["sp"],
    name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=cfg["nameId"]),
    session_indexes=[cfg["sessionIndex"]] if cfg.get("sessionIndex") else None,
    sign=True,
    sign_alg=SIG_RSA_SHA256,
    digest_alg=DIGEST_SHA256,
)
sys.stdout.write(json.dumps({"id": req_id, "samlRequest": base64.b64encode(str(request).encode()).decode()}))
