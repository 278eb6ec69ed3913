"""Independent IdP for interop tests: pysaml2 builds (and signs via xmlsec1, optionally
encrypts) a login response. Reads a JSON config on stdin, prints the base64 SAMLResponse."""
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

import functools

import saml2.entity
import saml2.sigver

cfg = json.load(sys.stdin)
# pysaml2 has no setting for the content algorithm (default tripledes-cbc, session key
# des-192): patch its template and the xmlsec1 session-key type.
DATA_ALG = cfg.get("dataAlg", "http://www.w3.org/2001/04/xmlenc#aes256-cbc")
SESSION_KEY = {
    "http://www.w3.org/2001/04/xmlenc#aes128-cbc": "aes-128",
    "http://www.w3.org/2001/04/xmlenc#aes256-cbc": "aes-256",
    "http://www.w3.org/2001/04/xmlenc#tripledes-cbc": "des-192",
}[DATA_ALG]
saml2.entity.pre_encryption_part = functools.partial(saml2.sigver.pre_encryption_part, msg_enc=DATA_ALG)
_encrypt_assertion = saml2.sigver.SecurityContext.encrypt_assertion


def _encrypt_with_session_key(self, statement, enc_key, template, key_type=None, node_xpath=None):
    return _encrypt_assertion(self, statement, enc_key, template, key_type=SESSION_KEY, node_xpath=node_xpath)


saml2.sigver.SecurityContext.encrypt_assertion = _encrypt_with_session_key
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
    "service": {"idp": {"endpoints": {"single_sign_on_service": [("https://idp.example.test/sso", BINDING_HTTP_REDIRECT)]},
                        "name_id_format": [NAMEID_FORMAT_EMAILADDRESS]}},
    "xmlsec_binary": "/usr/bin/xmlsec1",
})
server = Server(config=conf)
kwargs = {}
if cfg["encrypt"]:
    kwargs = {"encrypt_assertion": True, "encrypted_advice_attributes": False,
              "encrypt_cert_assertion": cfg["spCert"]}
resp = server.create_authn_response(
    identity=cfg["attributes"],
    in_response_to=cfg["reqId"],
    destination=cfg["acs"],
    sp_entity_id=cfg["sp"],
    name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=cfg["user"]),
    authn={"class_ref": "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"},
    sign_response=cfg["signMessage"],
    sign_assertion=cfg["signAssertion"],
    sign_alg=SIG_RSA_SHA256,
    digest_alg=DIGEST_SHA256,
    **kwargs,
)
sys.stdout.write(base64.b64encode(str(resp).encode()).decode())
