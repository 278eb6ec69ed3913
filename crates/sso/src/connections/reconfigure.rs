//! `PUT /admin/connections/{id}` and an edited `[[sso.connections]]` entry: a connection's
//! declaration replaced as a whole (name, connection type, IdP settings, attribute maps, OIDC
//! client), keeping what apps and IdPs already rely on — its id, organization, external id,
//! state and SP keys. The protocol cannot change (a SAML connection stays SAML).

use idbridge_store::StoreError;

use super::create::{NewConnection, NewProtocol};
use super::{saml_type_name, with_domains, Connections, ProtocolSettings};
use crate::db;
use crate::error::{FieldIssue, SsoError, SsoResult};
use crate::SsoService;
use idbridge_model::{Connection, Timestamp};
use idbridge_store::ChangeSet;

impl SsoService {
    /// Replaces the connection's declaration with `input` (validated like a new connection).
    /// `input.organization_id` and `input.external_id` (when given) must be the connection's
    /// own. One conditional commit: a concurrent change is a conflict, never lost.
    #[tracing::instrument(name = "connections.reconfigure", skip(self, input))]
    pub async fn reconfigure_connection(
        &self,
        id: &str,
        input: NewConnection,
    ) -> SsoResult<Connection> {
        let old = self.connections.load(id)?;
        let mut issues = Vec::new();
        if old.organization_id() != Some(input.organization_id.as_str()) {
            issues.push(FieldIssue::new("organization_id", "cannot_change"));
        }
        if input
            .external_id
            .as_ref()
            .is_some_and(|e| old.external_id.as_ref() != Some(e))
        {
            issues.push(FieldIssue::new("external_id", "cannot_change"));
        }
        let (protocol, type_name) = match (input.protocol, &old.protocol) {
            (NewProtocol::Saml(saml), ProtocolSettings::Saml(current)) => {
                let name = saml_type_name(saml.connection_type).to_owned();
                let settings = self
                    .saml_settings(id, saml, Some(current), &mut issues)
                    .await?;
                (settings, name)
            }
            (NewProtocol::Oidc(oidc), ProtocolSettings::Oidc(_)) => {
                let name = oidc.connection_type.as_str().to_owned();
                (self.oidc_settings(id, oidc)?, name)
            }
            (NewProtocol::Saml(_), ProtocolSettings::Oidc(_)) => {
                issues.push(FieldIssue::new("saml_options", "protocol_cannot_change"));
                (None, String::new())
            }
            (NewProtocol::Oidc(_), ProtocolSettings::Saml(_)) => {
                issues.push(FieldIssue::new("oidc_options", "protocol_cannot_change"));
                (None, String::new())
            }
        };
        if !issues.is_empty() {
            return Err(SsoError::Invalid(issues));
        }
        let Some(protocol) = protocol else {
            return Err(SsoError::internal(
                "connection settings missing without a reason",
            ));
        };
        let mut next = old.clone();
        next.protocol = protocol;
        next.connection.connection_type = type_name;
        if let Some(n) = input.name {
            next.connection.name = n;
        }
        next.connection.updated_at = Timestamp::now();
        let mut cs = ChangeSet::new();
        Connections::stage_replace(&mut cs, &old, &next)?;
        match db::commit(&self.store, cs).await {
            Ok(_) => {}
            Err(e @ StoreError::Conflict { .. }) if Connections::is_record_conflict(&e) => {
                return Err(SsoError::concurrent("connection"))
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(connection_id = %id, "connection reconfigured");
        let org = match next.organization_id() {
            Some(o) => self.organizations.get(o)?,
            None => None,
        };
        Ok(with_domains(next.connection, org.as_ref()))
    }
}
