//! Reading and removing connections: the wire object (with its organization's domains), the
//! secret-free admin view, the SP metadata document, lists and deletion.

use idbridge_model::{Connection, Event, EventKind, Page, PageRequest};
use idbridge_store::{ChangeSet, StoreError};
use serde_json::{json, Value};

use super::{
    event_data, with_domains, ConnectionFilter, ConnectionRecord, Connections, ProtocolSettings,
};
use crate::db;
use crate::error::{SsoError, SsoResult};
use crate::SsoService;

impl SsoService {
    /// The wire object of a record, with its organization's current domains.
    pub fn wire(&self, record: &ConnectionRecord) -> SsoResult<Connection> {
        let org = match record.organization_id() {
            Some(id) => self.organizations.get(id)?,
            None => None,
        };
        Ok(with_domains(record.connection.clone(), org.as_ref()))
    }

    /// `GET /connections/{id}`.
    pub fn connection(&self, id: &str) -> SsoResult<Connection> {
        self.wire(&self.connections.load(id)?)
    }

    /// `GET /connections`.
    pub fn list_connections(
        &self,
        filter: &ConnectionFilter,
        page: &PageRequest,
    ) -> SsoResult<Page<Connection>> {
        let records = self
            .connections
            .list(filter, page, |org| self.organizations.get(org))?;
        let data = records
            .data
            .iter()
            .map(|r| self.wire(r))
            .collect::<SsoResult<Vec<_>>>()?;
        Ok(Page {
            data,
            before: records.before,
            after: records.after,
        })
    }

    /// Secret-free view of a connection's settings for admins and the CLI.
    pub fn admin_view(&self, record: &ConnectionRecord) -> SsoResult<Value> {
        let c = self.wire(record)?;
        let public_url = self.public_url();
        let settings = match &record.protocol {
            ProtocolSettings::Saml(s) => json!({
                "protocol": "saml",
                "sp_entity_id": s.sp_entity_id,
                "acs_url": s.acs_url,
                "sp_metadata_url": format!("{public_url}/sso/saml/metadata/{}", c.id),
                "sp_signing_certs": s.sp_signing_keys.iter().map(|k| &k.cert_pem).collect::<Vec<_>>(),
                "sp_encryption_certs": s.sp_encryption_keys.iter().map(|k| &k.cert_pem).collect::<Vec<_>>(),
                "idp_metadata_url": s.idp_metadata_url,
                "idp_entity_id": s.idp_entity_id,
                "idp_sso_url": s.idp_sso_url,
                "idp_slo_url": s.idp_slo_url,
                "sp_slo_url": s.sp_slo_url(),
                "idp_signing_certs": s.idp_signing_certs,
                "sign_requests": s.sign_requests,
                "allow_idp_initiated": s.allow_idp_initiated,
                "clock_skew_secs": s.clock_skew_secs,
                "attribute_map": s.attribute_map,
            }),
            ProtocolSettings::Oidc(o) => json!({
                "protocol": "oidc",
                "issuer": o.issuer,
                "discovery_url": o.discovery_url,
                "client_id": o.client_id,
                "client_secret_stored": o.client_secret_sealed.is_some(),
                "client_secret_env": o.client_secret_env,
                "scopes": o.scopes,
                "claim_map": o.claim_map,
                "redirect_uri": self.oidc_callback_url(),
            }),
        };
        Ok(json!({"connection": c, "settings": settings}))
    }

    /// The admin view of connection `id`.
    pub fn connection_admin_view(&self, id: &str) -> SsoResult<Value> {
        self.admin_view(&self.connections.load(id)?)
    }

    /// The SP metadata XML of a SAML connection (public: IdP admins paste or poll it).
    pub fn sp_metadata(&self, id: &str) -> SsoResult<String> {
        let record = self.connections.load(id)?;
        let ProtocolSettings::Saml(saml) = &record.protocol else {
            return Err(SsoError::not_found("Connection", id));
        };
        idbridge_saml::sp_metadata_xml(&saml.public_sp_settings()?).map_err(SsoError::internal)
    }

    /// The OIDC redirect URI every OIDC connection is registered with.
    pub fn oidc_callback_url(&self) -> String {
        format!("{}/sso/oidc/callback", self.public_url())
    }

    /// Deletes a connection and appends `connection.deleted` (data = the pre-deletion object).
    #[tracing::instrument(name = "connections.delete", skip(self))]
    pub async fn delete_connection(&self, id: &str) -> SsoResult<Connection> {
        let record = self.connections.load(id)?;
        let conn = self.wire(&record)?;
        let mut cs = ChangeSet::new();
        Connections::stage_delete(&mut cs, &record);
        let event = Event::new(EventKind::ConnectionDeleted, event_data(&conn, &record));
        cs.append_event(&event, conn.organization_id.as_deref());
        match db::commit(&self.store, cs).await {
            Ok(_) => {
                self.forget_oidc_client(id);
                Ok(conn)
            }
            Err(StoreError::Conflict { .. }) => Err(SsoError::not_found("Connection", id)),
            Err(e) => Err(e.into()),
        }
    }
}
