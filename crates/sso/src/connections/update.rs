//! `PATCH /connections/{id}`: rename, external id, and `state` — `inactive` deactivates a
//! connection (no login starts on it; `connection.deactivated`), `active` activates it again
//! (`connection.activated`) — and attribute maps and protocol options merged by [`super::patch`],
//! all in one commit.

use idbridge_model::{Connection, ConnectionState, Event, EventKind, Timestamp};
use idbridge_store::{ChangeSet, StoreError};

use super::patch::{AttributeMapsPatch, ProtocolPatch};
use super::{event_data, with_domains, Connections, BY_EXTERNAL_ID};
use crate::db::{self};
use crate::error::{SsoError, SsoResult};
use crate::SsoService;

/// Longest connection name.
pub const MAX_NAME_LEN: usize = 512;

/// The state a PATCH may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestedState {
    Active,
    Inactive,
}

/// `PATCH /connections/{id}`, typed: `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ConnectionChanges {
    pub name: Option<String>,
    /// `Some(None)` clears it.
    pub external_id: Option<Option<String>>,
    pub state: Option<RequestedState>,
    pub attribute_maps: Option<AttributeMapsPatch>,
    pub protocol: Option<ProtocolPatch>,
}

impl SsoService {
    /// Applies the changes in one commit with their `connection.activated|deactivated` event;
    /// a request that changes nothing writes nothing.
    #[tracing::instrument(name = "connections.update", skip(self, changes))]
    pub async fn update_connection(
        &self,
        id: &str,
        changes: ConnectionChanges,
    ) -> SsoResult<Connection> {
        if let Some(n) = &changes.name {
            if n.trim().is_empty() {
                return Err(SsoError::invalid("name", "must_not_be_blank"));
            }
            if n.len() > MAX_NAME_LEN {
                return Err(SsoError::invalid("name", "too_long"));
            }
        }
        let old = self.connections.load(id)?;
        let mut next = old.clone();
        if changes.protocol.is_some() || changes.attribute_maps.is_some() {
            next.protocol = self
                .patched_settings(&old, changes.protocol, changes.attribute_maps)
                .await?;
        }
        let now = Timestamp::now();
        if let Some(n) = changes.name {
            next.connection.name = n;
        }
        if let Some(ext) = changes.external_id {
            next.external_id = ext;
        }
        let event = match changes.state {
            Some(RequestedState::Inactive) if old.connection.state != ConnectionState::Inactive => {
                next.connection.state = ConnectionState::Inactive;
                Some(EventKind::ConnectionDeactivated)
            }
            Some(RequestedState::Active) if old.connection.state != ConnectionState::Active => {
                next.connection.state = ConnectionState::Active;
                // Activated by hand: the first login does not announce it again.
                next.activated_at = Some(now);
                Some(EventKind::ConnectionActivated)
            }
            _ => None,
        };
        next.connection.status = next.connection.state.status();
        if next.connection == old.connection
            && next.external_id == old.external_id
            && db::to_json(&next.protocol)? == db::to_json(&old.protocol)?
        {
            return self.wire(&old);
        }
        next.connection.updated_at = now;
        let mut cs = ChangeSet::new();
        Connections::stage_replace(&mut cs, &old, &next)?;
        if next.external_id != old.external_id {
            if let Some(prev) = &old.external_id {
                cs.delete(BY_EXTERNAL_ID, prev);
            }
            if let Some(ext) = &next.external_id {
                cs.require_absent(BY_EXTERNAL_ID, ext);
                cs.put(BY_EXTERNAL_ID, ext, next.id().as_bytes().to_vec());
            }
        }
        let org = match next.organization_id() {
            Some(o) => self.organizations.get(o)?,
            None => None,
        };
        let wire = with_domains(next.connection.clone(), org.as_ref());
        if let Some(kind) = event {
            let e = Event::new(kind, event_data(&wire, &next));
            cs.append_event(&e, wire.organization_id.as_deref());
        }
        match db::commit(&self.store, cs).await {
            Ok(_) => {}
            Err(e @ StoreError::Conflict { .. }) if Connections::is_external_id_conflict(&e) => {
                return Err(SsoError::Refused {
                    code: "external_id_already_used",
                    message: "A connection with this external_id already exists.".into(),
                })
            }
            Err(e @ StoreError::Conflict { .. }) if Connections::is_record_conflict(&e) => {
                return Err(SsoError::concurrent("connection"))
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(connection_id = %id, state = ?wire.state, "connection updated");
        Ok(wire)
    }
}
