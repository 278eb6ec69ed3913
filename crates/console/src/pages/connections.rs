//! SSO connections: create a SAML connection from the IdP's metadata (URL or pasted XML) and
//! show what the IdP needs from us (SP entity id, ACS URL, SP metadata URL) with the IdP
//! certificates' expiry. Shared with the Admin Portal's `sso` pages.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use idbridge_saml::{AttributeMap, SamlConnectionType};
use idbridge_sso::connections::create::{NewConnection, NewProtocol, NewSaml};
use idbridge_sso::connections::saml_type;
use idbridge_sso::SsoError;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::{non_empty, page, sso_message};
use crate::web::{self, CsrfForm};
use crate::{Console, Operator};

/// The SAML connection types offered, with the names IT admins know them by.
const SAML_CHOICES: [(&str, &str); 6] = [
    ("GenericSAML", "Generic SAML 2.0"),
    ("OktaSAML", "Okta"),
    ("AzureSAML", "Microsoft Entra ID"),
    ("GoogleSAML", "Google Workspace"),
    ("ADFSSAML", "AD FS"),
    ("KeycloakSAML", "Keycloak"),
];

/// The form that creates a SAML connection (console and portal).
pub(crate) fn create_form(c: &Console, csrf: &str, action: &str) -> Markup {
    let _ = c;
    html! {
        form method="post" action=(action) class="stack" {
            h3 { "New SAML connection" }
            (web::csrf_input(csrf))
            div class="field" {
                label for="f-connection_type" { "Identity provider" }
                select id="f-connection_type" name="connection_type" {
                    @for (value, label) in SAML_CHOICES { option value=(value) { (label) } }
                }
            }
            (web::field("Connection name", "name", "text", false, Some("Optional; defaults to the organization's name")))
            (web::field("IdP metadata URL", "idp_metadata_url", "url", false, Some("The https URL where your IdP publishes its SAML metadata")))
            div class="field" {
                label for="f-idp_metadata_xml" { "Or paste the IdP metadata XML" }
                textarea id="f-idp_metadata_xml" name="idp_metadata_xml" rows="6" {}
            }
            button type="submit" { "Create connection" }
        }
    }
}

/// The create-connection form's fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SamlForm {
    connection_type: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    idp_metadata_url: Option<String>,
    #[serde(default)]
    idp_metadata_xml: Option<String>,
}

/// The service's input for `organization_id` (the caller decides the organization: the URL's
/// for operators, the portal session's for IT admins).
pub(crate) fn new_saml(organization_id: &str, f: &SamlForm) -> Result<NewConnection, SsoError> {
    let connection_type: SamlConnectionType = saml_type(&f.connection_type)
        .ok_or_else(|| SsoError::invalid("connection_type", "unknown_connection_type"))?;
    let idp_metadata_url = non_empty(&f.idp_metadata_url);
    let idp_metadata_xml = non_empty(&f.idp_metadata_xml);
    if idp_metadata_url.is_none() && idp_metadata_xml.is_none() {
        return Err(SsoError::invalid(
            "idp_metadata_url",
            "give_a_metadata_url_or_paste_the_metadata_xml",
        ));
    }
    Ok(NewConnection {
        organization_id: organization_id.to_string(),
        name: non_empty(&f.name),
        external_id: None,
        protocol: NewProtocol::Saml(NewSaml {
            connection_type,
            attribute_map: AttributeMap::preset(connection_type),
            idp_metadata_xml,
            idp_metadata_url,
            idp_entity_id: None,
            idp_sso_url: None,
            idp_slo_url: None,
            idp_signing_certs: Vec::new(),
            sp_entity_id: None,
            acs_url: None,
            sign_requests: false,
            allow_idp_initiated: false,
            clock_skew_secs: idbridge_saml::settings::DEFAULT_CLOCK_SKEW.as_secs(),
        }),
    })
}

pub(crate) async fn create(
    State(c): State<Arc<Console>>,
    Extension(op): Extension<Operator>,
    Path(org_id): Path<String>,
    CsrfForm(f): CsrfForm<SamlForm>,
) -> Response {
    let created = match new_saml(&org_id, &f) {
        Ok(input) => c.sso.create_connection(input).await,
        Err(e) => Err(e),
    };
    match created {
        Ok(conn) => {
            tracing::info!(operator = %op.username, connection = %conn.id, "console: connection created");
            web::redirect(&c, &format!("/console/connections/{}", conn.id))
        }
        Err(e) => {
            super::organizations::render_detail(&c, &op, &org_id, Some((false, sso_message(&e).1)))
                .await
        }
    }
}

pub(crate) fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// What the IdP needs from us, and what we know of the IdP (no secret is in the view).
pub(crate) fn settings_view(view: &Value) -> Markup {
    let s = &view["settings"];
    let certs: Vec<&str> = s["idp_signing_certs"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    html! {
        @if text(s, "protocol") == "saml" {
            section class="card" aria-labelledby="for-idp" {
                h2 id="for-idp" { "Paste these into your identity provider" }
                (web::copy_field("SP entity id (Audience URI)", "sp_entity_id", text(s, "sp_entity_id")))
                (web::copy_field("ACS URL (single sign-on URL)", "acs_url", text(s, "acs_url")))
                (web::copy_field("SP metadata URL", "sp_metadata_url", text(s, "sp_metadata_url")))
            }
            section class="card" aria-labelledby="from-idp" {
                h2 id="from-idp" { "From your identity provider" }
                dl class="facts" {
                    dt { "IdP entity id" } dd { (text(s, "idp_entity_id")) }
                    dt { "IdP sign-in URL" } dd { (text(s, "idp_sso_url")) }
                    dt { "Metadata URL" } dd { (s["idp_metadata_url"].as_str().unwrap_or("— (pasted XML)")) }
                }
                div class="table-wrap" {
                    table {
                        caption { "IdP signing certificates" }
                        thead { tr { th scope="col" { "#" } th scope="col" { "Expires" } th scope="col" { "Days left" } } }
                        tbody {
                            @for (i, pem) in certs.iter().enumerate() {
                                @let exp = idbridge_sso::connections::metadata::expiry(pem);
                                tr class=[exp.as_ref().filter(|(d, _)| *d < 30).map(|_| "warn")] {
                                    td { (i + 1) }
                                    td { (exp.as_ref().map_or("unreadable", |(_, date)| date.as_str())) }
                                    td { (exp.as_ref().map_or(String::new(), |(d, _)| d.to_string())) }
                                }
                            }
                            @if certs.is_empty() { tr { td colspan="3" { "None." } } }
                        }
                    }
                }
            }
        } @else {
            section class="card" {
                h2 { "OpenID Connect" }
                dl class="facts" {
                    dt { "Issuer" } dd { (text(s, "issuer")) }
                    dt { "Client id" } dd { (text(s, "client_id")) }
                    dt { "Redirect URI" } dd { (text(s, "redirect_uri")) }
                }
            }
        }
    }
}

pub(crate) async fn detail(
    State(c): State<Arc<Console>>,
    Extension(op): Extension<Operator>,
    Path(id): Path<String>,
) -> Response {
    let view = match c.sso.connection_admin_view(&id) {
        Ok(v) => v,
        Err(SsoError::NotFound { .. }) => {
            return super::not_found(&c, &op, &format!("Connection {id}"))
        }
        Err(e) => {
            let (status, msg) = sso_message(&e);
            return (status, web::bare_error(status, "Connection", &msg)).into_response();
        }
    };
    let conn = &view["connection"];
    let org_id = text(conn, "organization_id").to_string();
    page(
        &c,
        &op,
        "/console/organizations",
        text(conn, "name"),
        html! {
            dl class="facts" {
                dt { "Id" } dd { code { (text(conn, "id")) } }
                dt { "Type" } dd { (text(conn, "connection_type")) }
                dt { "State" } dd { (text(conn, "state")) }
                dt { "Organization" } dd { a href=(c.url(&format!("/console/organizations/{org_id}"))) { (org_id) } }
            }
            (settings_view(&view))
            section class="card" aria-labelledby="test" {
                h2 id="test" { "Test sign-in" }
                p { "Sign in through this connection yourself: you go to the identity provider, and come back here to see the profile an app would get." }
                form method="post" action=(c.url(&format!("/console/connections/{id}/test-sign-in"))) {
                    (web::csrf_input(&op.csrf))
                    button type="submit" { "Test sign-in" }
                }
            }
        },
    )
}
