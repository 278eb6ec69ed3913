// Independent IdP for interop tests: samlify (xml-crypto) signs, and optionally encrypts, a
// login response. Reads a JSON config on stdin, prints the base64 SAMLResponse on stdout.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const saml = require('samlify');

// samlify logs warnings with console.log: keep stdout for the response only.
console.log = console.warn = (...args) => process.stderr.write(args.join(' ') + '\n');

const cfg = JSON.parse(fs.readFileSync(0, 'utf8'));
const EMAIL_FMT = 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress';

const idp = saml.IdentityProvider({
  entityID: cfg.idp,
  privateKey: cfg.idpKey,
  signingCert: cfg.idpCert,
  isAssertionEncrypted: cfg.encrypt,
  nameIDFormat: [EMAIL_FMT],
  singleSignOnService: [{ Binding: 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect', Location: 'https://idp.example.test/sso' }],
});
const sp = saml.ServiceProvider({
  entityID: cfg.sp,
  assertionConsumerService: [{ Binding: 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST', Location: cfg.acs }],
  wantAssertionsSigned: cfg.signAssertion,
  wantMessageSigned: cfg.signMessage,
  isAssertionEncrypted: cfg.encrypt,
  encryptCert: cfg.spCert,
});

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/"/g, '&quot;');
const newId = () => '_' + crypto.randomBytes(16).toString('hex');

(async () => {
  const { context } = await idp.createLoginResponse(
    sp,
    { extract: { request: { id: cfg.reqId } } },
    'post',
    { email: cfg.user },
    (template) => {
      const now = new Date();
      const later = new Date(now.getTime() + 5 * 60 * 1000).toISOString();
      const id = newId();
      const attrs = Object.entries(cfg.attributes)
        .map(([name, values]) => `<saml:Attribute Name="${esc(name)}" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic">${values.map((v) => `<saml:AttributeValue xsi:type="xs:string">${esc(v)}</saml:AttributeValue>`).join('')}</saml:Attribute>`)
        .join('');
      const tvalue = {
        ID: id,
        AssertionID: newId(),
        Destination: cfg.acs,
        Audience: cfg.sp,
        EntityID: cfg.sp,
        SubjectRecipient: cfg.acs,
        Issuer: cfg.idp,
        IssueInstant: now.toISOString(),
        StatusCode: 'urn:oasis:names:tc:SAML:2.0:status:Success',
        ConditionsNotBefore: now.toISOString(),
        ConditionsNotOnOrAfter: later,
        SubjectConfirmationDataNotOnOrAfter: later,
        NameIDFormat: EMAIL_FMT,
        NameID: cfg.user,
        InResponseTo: cfg.reqId,
      };
      // replaceTagsByValue escapes values, so the two XML fragments go in first, verbatim.
      const fragments = {
        AuthnStatement: `<saml:AuthnStatement AuthnInstant="${now.toISOString()}" SessionIndex="_samlify_session"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>`,
        AttributeStatement: `<saml:AttributeStatement>${attrs}</saml:AttributeStatement>`,
      };
      let xml = template;
      for (const [tag, fragment] of Object.entries(fragments)) {
        xml = xml.split(`{${tag}}`).join(fragment);
      }
      return { id, context: saml.SamlLib.replaceTagsByValue(xml, tvalue) };
    },
  );
  process.stdout.write(context);
})().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
