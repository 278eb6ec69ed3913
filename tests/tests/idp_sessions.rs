//! idbridge's own browser session ("remember this browser") and its single logout (issue 16),
//! against the real binary and a real slapd. The service providers are driven with idbridge's
//! own SP code (`idbridge_saml`: signed AuthnRequests and LogoutRequests with their own keys),
//! the browser with plain HTTP (cookies by hand, no redirects followed).
//!
//! - The setting `remember_browser_ttl_secs` (admin API; 0 = off, no checkbox; out of range is
//!   a 422 naming it).
//! - A password login with "remember this browser" sets an HttpOnly, SameSite=Lax cookie; the
//!   next SP-initiated login from that browser gets the signed assertion without a login page.
//! - The session does not authenticate: for another organization; after the user is disabled
//!   in the directory (checked on each use); after it expired; after the user signed out.
//! - SAML single logout: unsigned and forged LogoutRequests, and another SP's LogoutRequest
//!   naming this SP's SessionIndex, end nothing; the right SP's signed LogoutRequest ends the
//!   session and is answered with a LogoutResponse to the SP's registered SLO URL, signed with
//!   the IdP's key (verified here); a replay of it is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use anyhow::{ensure, Context};
use base64::Engine as _;
use idbridge_saml::sp::{build_logout_request, LogoutSubject};
use idbridge_saml::{
    build_authn_request, verify_slo_redirect, IdpSettings, SloContext, SloMessage, SpKeyPair,
    SpSettings,
};
use idbridge_tests::directory_api::{all_pages, sync};
use idbridge_tests::login_page::{browser, cookie, input};
use idbridge_tests::{Slapd, TestServer, LDAP_ADMIN_DN, LDAP_SUFFIX};
use serde_json::{json, Value};

const SP1: &str = "https://app-one.example.test/saml";
const SP2: &str = "https://app-two.example.test/saml";
const BROWSER_COOKIE: &str = "idbridge_browser_session=";

fn person(uid: &str, ou: &str, password: &str) -> String {
    format!(
        "dn: uid={uid},ou={ou},{LDAP_SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\n\
         cn: {uid} Test\ngivenName: {uid}\nsn: Test\nmail: {uid}@example.test\n\
         userPassword: {password}\n\n"
    )
}

/// A service provider driven by idbridge's own SP code.
struct Sp {
    settings: SpSettings,
    slo_url: String,
}

impl Sp {
    fn new(entity: &str) -> Sp {
        let host = entity.trim_end_matches("/saml");
        let mut settings = SpSettings::new(entity, format!("{host}/acs"));
        settings
            .signing_keys
            .push(SpKeyPair::generate("sp", 1).unwrap());
        settings.want_signed_requests = true;
        Sp {
            settings,
            slo_url: format!("{host}/slo"),
        }
    }

    fn cert_pem(&self) -> String {
        String::from_utf8(self.settings.signing_keys[0].cert.to_pem().unwrap()).unwrap()
    }

    /// A signed AuthnRequest URL at the IdP.
    fn authn_url(&self, idp: &IdpSettings) -> String {
        build_authn_request(&self.settings, idp, None, false)
            .unwrap()
            .url
    }

    /// A signed LogoutRequest URL at the IdP's SingleLogoutService.
    fn logout_url(&self, idp_slo: &str, name_id: &str, session_index: &str) -> String {
        build_logout_request(
            &self.settings,
            idp_slo,
            &LogoutSubject {
                name_id,
                name_id_format: None,
                session_index: Some(session_index),
            },
            None,
        )
        .unwrap()
        .url
    }
}

struct World {
    slapd: Slapd,
    a: TestServer,
    org: String,
    dir: String,
    idp: IdpSettings,
    partner_idp: IdpSettings,
    slo: String,
    sp1: Sp,
    sp2: Sp,
}

async fn world() -> anyhow::Result<World> {
    let slapd = Slapd::start()?;
    let mut tree =
        format!("dn: ou=Partners,{LDAP_SUFFIX}\nobjectClass: organizationalUnit\nou: Partners\n\n");
    for uid in ["alice", "bob", "carol"] {
        tree.push_str(&person(uid, "People", &format!("{uid}-pw-1")));
    }
    // Enough users that disabling one stays under the sync's mass-deletion guard (10%).
    for i in 0..10 {
        tree.push_str(&person(&format!("user{i}"), "People", "x-pw-1"));
    }
    tree.push_str(&person("pat", "Partners", "pat-pw-1"));
    slapd.add(&tree)?;
    let pw = slapd.password_file()?;
    let ldap = |dir: &str, ou: &str| {
        format!(
            r#"
[[ldap_directories]]
directory = "{dir}"
full_sync_interval_secs = 3600
delta_sync_interval_secs = 3600
[ldap_directories.ldap]
url = "{url}"
allow_plain = true
flavor = "openldap"
bind_dn = "{LDAP_ADMIN_DN}"
bind_password_file = "{pw}"
user_base_dns = ["ou={ou},{LDAP_SUFFIX}"]
group_base_dns = ["ou=Groups,{LDAP_SUFFIX}"]
[ldap_directories.ldap.attributes]
disabled = "employeeType"
disabled_values = ["disabled"]
"#,
            url = slapd.url(),
            pw = pw.display()
        )
    };
    let config = format!(
        r#"
[[organizations]]
external_id = "acme"
name = "Acme"
domains = ["example.test"]

[[organizations]]
external_id = "partners"
name = "Partners"
domains = ["partners.test"]

[[directories]]
key = "corp-ldap"
organization = "acme"
name = "Corp LDAP"
type = "ldap"

[[directories]]
key = "partner-ldap"
organization = "partners"
name = "Partner LDAP"
type = "ldap"
{}{}"#,
        ldap("corp-ldap", "People"),
        ldap("partner-ldap", "Partners")
    );
    let a = TestServer::builder().config_toml(config).start().await?;
    let dirs = all_pages(&a, "/directories").await?;
    let find = |name: &str| -> anyhow::Result<(String, String)> {
        let d = dirs
            .iter()
            .find(|d| d["name"] == name)
            .context("declared directory")?;
        Ok((
            d["id"].as_str().unwrap().to_owned(),
            d["organization_id"].as_str().unwrap().to_owned(),
        ))
    };
    let (dir, org) = find("Corp LDAP")?;
    let (partner_dir, partner_org) = find("Partner LDAP")?;
    for d in [&dir, &partner_dir] {
        let rec = sync(&a, d, "full").await?;
        ensure!(rec["ok"] == true, "sync: {rec}");
    }

    let (sp1, sp2) = (Sp::new(SP1), Sp::new(SP2));
    for (sp, entity, org, dir) in [
        (&sp1, SP1, &org, &dir),
        (&sp2, SP2, &org, &dir),
        (&sp1, SP1, &partner_org, &partner_dir),
    ] {
        let r = a
            .post("/admin/service_providers")
            .json(&json!({
                "organization_id": org, "entity_id": entity,
                "acs_urls": [sp.settings.acs_url], "signing_certs": [sp.cert_pem()],
                "slo_url": sp.slo_url, "directory_id": dir, "name": entity,
            }))
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        ensure!(status == 201, "service provider: {body}");
        ensure!(body["slo_url"] == sp.slo_url.as_str(), "{body}");
        ensure!(
            body["idp"]["slo_url"] == format!("{}/idp/{org}/saml/slo", a.url()).as_str(),
            "{body}"
        );
    }
    let r = a
        .post("/admin/service_providers")
        .json(&json!({"organization_id": org, "entity_id": "https://x.test", "acs_urls": ["https://x.test/acs"], "slo_url": "javascript:alert(1)"}))
        .send()
        .await?;
    ensure!(r.status() == 422, "bad slo_url accepted");
    ensure!(r.text().await?.contains("slo_url"));

    let metadata = |org: String| {
        let a = &a;
        async move {
            let xml = browser()
                .get(format!("{}/idp/{org}/saml/metadata", a.url()))
                .send()
                .await?
                .text()
                .await?;
            ensure!(xml.contains("SingleLogoutService"), "{xml}");
            anyhow::Ok(IdpSettings::from_metadata_xml(&xml)?)
        }
    };
    let idp = metadata(org.clone()).await?;
    let partner_idp = metadata(partner_org.clone()).await?;
    let slo = format!("{}/idp/{org}/saml/slo", a.url());
    Ok(World {
        slapd,
        a,
        org,
        dir,
        idp,
        partner_idp,
        slo,
        sp1,
        sp2,
    })
}

async fn set_remember_ttl(a: &TestServer, secs: Value) -> anyhow::Result<(u16, Value)> {
    let r = a
        .request(reqwest::Method::PATCH, "/admin/idp/settings")
        .json(&json!({ "remember_browser_ttl_secs": secs }))
        .send()
        .await?;
    Ok((r.status().as_u16(), r.json().await?))
}

/// What one SSO request answered.
enum Answer {
    /// The login page: its login-session cookie and HTML.
    Page { idp_cookie: String, html: String },
    /// The auto-submitting page with the signed assertion (decoded Response XML).
    Assertion(String),
}

fn response_xml(html: &str) -> anyhow::Result<String> {
    let b64 = input(html, "SAMLResponse").context("SAMLResponse")?;
    Ok(String::from_utf8(
        base64::engine::general_purpose::STANDARD.decode(b64)?,
    )?)
}

/// An SP-initiated login, with the browser's session cookie if given.
async fn sso(url: &str, browser_cookie: Option<&str>) -> anyhow::Result<(Answer, Vec<String>)> {
    let mut req = browser().get(url);
    if let Some(c) = browser_cookie {
        req = req.header("cookie", c);
    }
    let r = req.send().await?;
    let set: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let idp_cookie = cookie(&r, "idbridge_idp_");
    let status = r.status();
    let html = r.text().await?;
    ensure!(status == 200, "SSO: {status}: {html}");
    if html.contains("SAMLResponse") {
        return Ok((Answer::Assertion(response_xml(&html)?), set));
    }
    let idp_cookie = idp_cookie.context("the login page's cookie")?;
    Ok((Answer::Page { idp_cookie, html }, set))
}

/// Logs in through the page; answers the Response XML and the browser cookie (if set).
async fn password_login(
    a: &TestServer,
    org: &str,
    url: &str,
    login: &str,
    remember: bool,
) -> anyhow::Result<(String, Option<String>)> {
    let (Answer::Page { idp_cookie, html }, _) = sso(url, None).await? else {
        anyhow::bail!("expected the login page");
    };
    ensure!(
        html.contains("name=\"remember\"") == remember,
        "checkbox offered: {html}"
    );
    let mut form = vec![
        ("k", input(&html, "k").context("k")?),
        ("csrf", input(&html, "csrf").context("csrf")?),
        ("login", login.to_owned()),
        ("password", format!("{login}-pw-1")),
    ];
    if remember {
        form.push(("remember", "1".to_owned()));
    }
    let r = browser()
        .post(format!("{}/idp/{org}/login", a.url()))
        .header("cookie", idp_cookie)
        .form(&form)
        .send()
        .await?;
    let set = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with(BROWSER_COOKIE));
    let status = r.status();
    let html = r.text().await?;
    ensure!(status == 200, "login: {status}: {html}");
    if let Some(c) = &set {
        ensure!(c.contains("HttpOnly") && c.contains("SameSite=Lax"), "{c}");
        ensure!(c.contains(&format!("Path=/idp/{org}")), "{c}");
    }
    Ok((
        response_xml(&html)?,
        set.map(|c| c.split(';').next().unwrap().to_owned()),
    ))
}

fn attr<'x>(xml: &'x str, name: &str) -> Option<&'x str> {
    let marker = format!("{name}=\"");
    let at = xml.find(&marker)? + marker.len();
    xml[at..].split('"').next()
}

fn name_id(xml: &str) -> String {
    let at = xml.find("NameID").unwrap();
    let rest = &xml[at..];
    let start = rest.find('>').unwrap() + 1;
    rest[start..].split('<').next().unwrap().to_owned()
}

fn is_assertion(a: &Answer) -> bool {
    matches!(a, Answer::Assertion(_))
}

#[tokio::test]
async fn remembered_browser_skips_the_password_until_logout() -> anyhow::Result<()> {
    let w = world().await?;
    let a = &w.a;

    // Off by default: no checkbox, no cookie.
    let (_, none) = password_login(a, &w.org, &w.sp1.authn_url(&w.idp), "alice", false).await?;
    ensure!(none.is_none(), "a cookie while the setting is off");
    let (status, body) = set_remember_ttl(a, json!(30 * 24 * 3600 + 1)).await?;
    ensure!(
        status == 422 && body.to_string().contains("remember_browser_ttl_secs"),
        "{status} {body}"
    );
    let (status, body) = set_remember_ttl(a, json!(3600)).await?;
    ensure!(
        status == 200 && body["remember_browser_ttl_secs"] == 3600,
        "{body}"
    );

    // Alice signs in once with "remember this browser".
    let (first, alice) = password_login(a, &w.org, &w.sp1.authn_url(&w.idp), "alice", true).await?;
    let alice = alice.context("the browser-session cookie")?;
    let sp1_index = attr(&first, "SessionIndex").unwrap().to_owned();
    let alice_name = name_id(&first);

    // The next login of the same browser, at another SP of the organization: no password.
    let (answer, _) = sso(&w.sp2.authn_url(&w.idp), Some(&alice)).await?;
    let Answer::Assertion(second) = answer else {
        panic!("the remembered browser got the login page");
    };
    ensure!(second.contains("alice@example.test"), "{second}");
    ensure!(second.contains(SP2), "audience: {second}");
    let sp2_index = attr(&second, "SessionIndex").unwrap().to_owned();
    ensure!(sp1_index != sp2_index);
    // Without the cookie, the password page as before.
    ensure!(!is_assertion(&sso(&w.sp1.authn_url(&w.idp), None).await?.0));

    // Another organization's IdP does not take it (and drops the cookie); it still works here.
    let (answer, set) = sso(&w.sp1.authn_url(&w.partner_idp), Some(&alice)).await?;
    ensure!(
        !is_assertion(&answer),
        "another organization took the session"
    );
    ensure!(
        set.iter()
            .any(|c| c.starts_with(BROWSER_COOKIE) && c.contains("Max-Age=0")),
        "{set:?}"
    );
    ensure!(is_assertion(
        &sso(&w.sp1.authn_url(&w.idp), Some(&alice)).await?.0
    ));

    // Single logout. Unsigned: refused, nothing ended.
    let good = w.sp1.logout_url(&w.slo, &alice_name, &sp1_index);
    let unsigned = good.split("&SigAlg=").next().unwrap().to_owned();
    let r = browser().get(&unsigned).send().await?;
    ensure!(r.status() == 400, "unsigned logout: {}", r.status());
    // Forged: SP1's issuer, signed with SP2's key.
    let mut forger = Sp::new(SP1);
    forger.settings.signing_keys = w.sp2.settings.signing_keys.clone();
    let r = browser()
        .get(forger.logout_url(&w.slo, &alice_name, &sp1_index))
        .send()
        .await?;
    ensure!(r.status() == 400, "forged logout: {}", r.status());
    ensure!(r.text().await?.contains("signature"));
    // SP2, properly signed, naming SP1's SessionIndex: answered, but nothing ended.
    let r = browser()
        .get(w.sp2.logout_url(&w.slo, &alice_name, &sp1_index))
        .send()
        .await?;
    ensure!(r.status() == 302, "other SP's logout: {}", r.status());
    let location = r.headers()["location"].to_str()?.to_owned();
    ensure!(location.starts_with(&w.sp2.slo_url), "{location}");
    ensure!(
        is_assertion(&sso(&w.sp1.authn_url(&w.idp), Some(&alice)).await?.0),
        "another SP's SessionIndex ended the session"
    );

    // SP1's own signed LogoutRequest: ended; a signed LogoutResponse to SP1's SLO URL.
    let r = browser().get(&good).send().await?;
    ensure!(r.status() == 302, "logout: {}", r.status());
    let cleared = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().starts_with(BROWSER_COOKIE));
    ensure!(cleared, "the browser cookie was not cleared");
    let location = r.headers()["location"].to_str()?.to_owned();
    let (base, query) = location.split_once('?').context("query")?;
    ensure!(base == w.sp1.slo_url, "{location}");
    // The answer verifies with the IdP's certificate, as the SP would check it.
    let ctx = SloContext {
        idp: &w.idp,
        slo_url: &w.sp1.slo_url,
        now: chrono::Utc::now(),
        clock_skew: std::time::Duration::from_secs(60),
        max_age: std::time::Duration::from_secs(60),
    };
    let SloMessage::Response { status, .. } = verify_slo_redirect(query, &ctx)? else {
        panic!("not a LogoutResponse");
    };
    ensure!(status.ends_with(":Success"), "{status}");
    // A tampered answer would not verify (the check above can fail).
    let tampered = query.replacen("SAMLResponse=", "SAMLResponse=A", 1);
    ensure!(verify_slo_redirect(&tampered, &ctx).is_err());
    ensure!(
        !is_assertion(&sso(&w.sp2.authn_url(&w.idp), Some(&alice)).await?.0),
        "the session outlived single logout"
    );
    // The same LogoutRequest again: refused.
    let r = browser().get(&good).send().await?;
    ensure!(r.status() == 400, "replayed logout: {}", r.status());

    // The browser signs itself out.
    let (_, alice) = password_login(a, &w.org, &w.sp1.authn_url(&w.idp), "alice", true).await?;
    let alice = alice.context("cookie")?;
    ensure!(is_assertion(
        &sso(&w.sp1.authn_url(&w.idp), Some(&alice)).await?.0
    ));
    let r = browser()
        .post(format!("{}/idp/{}/logout", a.url(), w.org))
        .header("cookie", &alice)
        .send()
        .await?;
    ensure!(r.status() == 200);
    ensure!(r.text().await?.contains("signed out"));
    ensure!(!is_assertion(
        &sso(&w.sp1.authn_url(&w.idp), Some(&alice)).await?.0
    ));
    Ok(())
}

#[tokio::test]
async fn remembered_sessions_end_with_the_user_and_with_time() -> anyhow::Result<()> {
    let w = world().await?;
    let a = &w.a;
    set_remember_ttl(a, json!(3600)).await?;

    // Bob is disabled in the directory: checked on each use.
    let (_, bob) = password_login(a, &w.org, &w.sp1.authn_url(&w.idp), "bob", true).await?;
    let bob = bob.context("cookie")?;
    ensure!(is_assertion(
        &sso(&w.sp1.authn_url(&w.idp), Some(&bob)).await?.0
    ));
    w.slapd.modify(
        &format!("dn: uid=bob,ou=People,{LDAP_SUFFIX}\nchangetype: modify\nadd: employeeType\nemployeeType: disabled\n"),
        false,
    )?;
    let rec = sync(a, &w.dir, "full").await?;
    ensure!(rec["ok"] == true, "sync: {rec}");
    ensure!(
        !is_assertion(&sso(&w.sp1.authn_url(&w.idp), Some(&bob)).await?.0),
        "a disabled user's session still authenticates"
    );

    // Expiry: a one-second session is gone after two.
    set_remember_ttl(a, json!(1)).await?;
    let (_, carol) = password_login(a, &w.org, &w.sp1.authn_url(&w.idp), "carol", true).await?;
    let carol = carol.context("cookie")?;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    ensure!(
        !is_assertion(&sso(&w.sp1.authn_url(&w.idp), Some(&carol)).await?.0),
        "an expired session still authenticates"
    );
    // A made-up cookie is just ignored.
    ensure!(!is_assertion(
        &sso(
            &w.sp1.authn_url(&w.idp),
            Some("idbridge_browser_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        )
        .await?
        .0
    ));
    Ok(())
}
