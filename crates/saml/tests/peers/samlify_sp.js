// Independent SP for the IdP-side interop tests: samlify (xml-crypto) imports idbridge's IdP
// metadata, then parses a login Response ("parse"), creates an AuthnRequest for the Redirect
// or POST binding ("request"), or prints its own SP metadata ("metadata").
// Reads a JSON config on stdin, prints JSON on stdout.
'use strict';
const fs = require('fs');
const saml = require('samlify');

// samlify logs warnings with console.log: keep stdout for the result only.
console.log = console.warn = (...args) => process.stderr.write(args.join(' ') + '\n');
// Schema validation is the job of the other peers (pysaml2 validates against the XSDs).
saml.setSchemaValidator({ validate: () => Promise.resolve('skipped') });

const cfg = JSON.parse(fs.readFileSync(0, 'utf8'));
const POST = 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST';

const idp = saml.IdentityProvider({
  metadata: cfg.idpMetadata,
  isAssertionEncrypted: !!cfg.encrypted,
  messageSigningOrder: 'sign-then-encrypt',
});
const sp = saml.ServiceProvider({
  entityID: cfg.sp,
  assertionConsumerService: [{ Binding: POST, Location: cfg.acs }],
  nameIDFormat: [cfg.nameIdFormat || 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress'],
  wantAssertionsSigned: cfg.wantAssertionsSigned !== false,
  wantMessageSigned: !!cfg.wantMessageSigned,
  isAssertionEncrypted: !!cfg.encrypted,
  encPrivateKey: cfg.spEncKey,
  encryptCert: cfg.spEncCert,
  authnRequestsSigned: !!cfg.signRequests,
  privateKey: cfg.spSignKey,
  signingCert: cfg.spSignCert,
  requestSignatureAlgorithm: cfg.requestSigAlg || 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
  relayState: cfg.relayState,
});

(async () => {
  if (cfg.command === 'parse') {
    const body = { SAMLResponse: cfg.samlResponse };
    if (cfg.relayState) body.RelayState = cfg.relayState;
    const { extract } = await sp.parseLoginResponse(idp, 'post', { body });
    process.stdout.write(JSON.stringify(extract));
  } else if (cfg.command === 'metadata') {
    process.stdout.write(JSON.stringify({ metadata: sp.getMetadata() }));
  } else if (cfg.command === 'request') {
    const r = sp.createLoginRequest(idp, cfg.binding);
    process.stdout.write(JSON.stringify(r));
  } else {
    throw new Error('unknown command ' + cfg.command);
  }
})().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
