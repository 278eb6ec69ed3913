// Independent IdP for single-logout interop: samlify (node-rsa) verifies our signed
// LogoutRequest against our SP metadata and answers it with a signed LogoutResponse, starts an
// IdP-initiated LogoutRequest, and verifies our signed LogoutResponse. Reads a JSON config on
// stdin, prints a JSON result on stdout; a refused message exits non-zero. `binding: "post"`
// sends the answer / the new request over HTTP-POST (base64 XML with an enveloped signature, to
// the SP metadata's HTTP-POST SingleLogoutService) instead of HTTP-Redirect.
//   {mode: "metadata", idp, idpKey, idpCert, idpSso, idpSlo}                     → {metadata}
//   {mode: "answer-request", ..., spMetadata, query, octetString, binding?}      → {nameId, sessionIndex, responseUrl | samlResponse, endpoint}
//   {mode: "create-request", ..., spMetadata, nameId, sessionIndex, binding?}    → {url | samlRequest, endpoint, id}
//   {mode: "verify-response", ..., spMetadata, query, octetString}               → {inResponseTo, status}
'use strict';
const fs = require('fs');
const saml = require('samlify');

console.log = console.warn = (...args) => process.stderr.write(args.join(' ') + '\n');
// Schema validation is not what this peer tests (our messages are checked by our own gate).
saml.setSchemaValidator({ validate: () => Promise.resolve('skipped') });

const cfg = JSON.parse(fs.readFileSync(0, 'utf8'));
const BINDING = cfg.binding || 'redirect';
const REDIRECT = 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect';
const EMAIL_FMT = 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress';

const idp = saml.IdentityProvider({
  entityID: cfg.idp,
  privateKey: cfg.idpKey,
  signingCert: cfg.idpCert,
  nameIDFormat: [EMAIL_FMT],
  requestSignatureAlgorithm: 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
  singleSignOnService: [{ Binding: REDIRECT, Location: cfg.idpSso }],
  singleLogoutService: [{ Binding: REDIRECT, Location: cfg.idpSlo }],
  wantLogoutRequestSigned: true,
  wantLogoutResponseSigned: true,
});

(async () => {
  if (cfg.mode === 'metadata') {
    process.stdout.write(JSON.stringify({ metadata: idp.getMetadata() }));
    return;
  }
  const sp = saml.ServiceProvider({
    metadata: cfg.spMetadata,
    wantLogoutRequestSigned: true,
    wantLogoutResponseSigned: true,
  });
  if (cfg.mode === 'answer-request') {
    const parsed = await idp.parseLogoutRequest(sp, 'redirect', { query: cfg.query, octetString: cfg.octetString });
    const { context, entityEndpoint } = idp.createLogoutResponse(sp, parsed, BINDING, '');
    process.stdout.write(JSON.stringify({
      nameId: parsed.extract.nameID,
      sessionIndex: parsed.extract.sessionIndex,
      issuer: parsed.extract.issuer,
      ...(BINDING === 'post' ? { samlResponse: context, endpoint: entityEndpoint } : { responseUrl: context }),
    }));
  } else if (cfg.mode === 'create-request') {
    const { id, context, entityEndpoint } = idp.createLogoutRequest(sp, BINDING, {
      logoutNameID: cfg.nameId,
      sessionIndex: cfg.sessionIndex,
    });
    process.stdout.write(JSON.stringify(
      BINDING === 'post' ? { id, samlRequest: context, endpoint: entityEndpoint } : { id, url: context },
    ));
  } else if (cfg.mode === 'verify-response') {
    const parsed = await idp.parseLogoutResponse(sp, 'redirect', { query: cfg.query, octetString: cfg.octetString });
    process.stdout.write(JSON.stringify({
      inResponseTo: parsed.extract.response && parsed.extract.response.inResponseTo,
      issuer: parsed.extract.issuer,
    }));
  } else {
    throw new Error(`unknown mode ${cfg.mode}`);
  }
})().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
