//! Bringing one remote object to its local state: a user, a group, or one membership.
//!
//! Every step reads the CURRENT local object (not the event's copy), so replaying an event
//! after a crash, or an event older than what a backfill already sent, converges to the same
//! remote state; an unchanged object (same fingerprint) costs no request. A create that may
//! have reached the target without an answer looks the object up first (`externalId`, then
//! `userName` / `displayName`) and adopts it: no remote twin is ever created.

use std::time::Duration;

use idbridge_directory::{EngineError, StoredGroup, StoredUser};
use idbridge_model::{Timestamp, UserState};
use rand::SeedableRng;
use reqwest::Method;
use serde_json::Value;

use super::client::{Answer, CallError};
use super::records::{Deprovision, IdMapEntry, ObjectKind, ParkedObject};
use super::resource::{
    add_members_patch, deactivate_patch, differences, encode, eq_filter, get_ci,
    group_attributes_patch, group_body, group_with_members, remove_member_patch, user_body,
    user_name_of,
};
use super::shared::{lock, Outcome, Shared};
use crate::config::Backoff;

/// Members sent per request (a create with more is followed by PATCH adds).
pub(crate) const MEMBER_CHUNK: usize = 1000;
/// A request that times out this many times in a row parks its object.
const TIMEOUT_ATTEMPTS: u32 = 3;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

pub(crate) fn backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(30),
    }
}

/// One unit of work for a lane.
#[derive(Debug, Clone)]
pub(crate) enum Work {
    /// Bring a user to its local state (`snapshot`: as a backfill page read it).
    User {
        id: String,
        snapshot: Option<Box<StoredUser>>,
    },
    /// Bring a group (attributes; members too when it is created) to its local state.
    Group {
        id: String,
        snapshot: Option<Box<StoredGroup>>,
    },
    /// A membership changed (`added`: the event's direction).
    Membership {
        group: String,
        user: String,
        added: bool,
    },
}

/// Work with its place in the dispatch order.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub ordinal: u64,
    pub lane: usize,
    /// The object may have been sent before the last stop: look before creating.
    pub maybe_sent: bool,
    pub work: Work,
}

/// A remote object a lookup found.
struct Found {
    id: String,
    resource: Value,
    /// A local object (no longer in the directory) that mapped to it.
    previous_holder: Option<String>,
}

/// A remote object found or created.
struct Remote {
    id: String,
    /// Found by a lookup (it existed), not created now.
    adopted: bool,
    /// The resource as the target holds it (when found by a lookup).
    found: Option<Value>,
    /// A gone local object whose mapping moves to this one.
    previous_holder: Option<String>,
}

impl Shared {
    /// Runs one item.
    pub(crate) async fn process(&self, item: &Item) -> Outcome {
        match &item.work {
            Work::User { id, snapshot } => {
                self.sync_user(id, snapshot.as_deref().cloned(), item.maybe_sent, false)
                    .await
            }
            Work::Group { id, snapshot } => {
                self.sync_group(id, snapshot.as_deref().cloned(), item.maybe_sent, false)
                    .await
            }
            Work::Membership { group, user, added } => {
                self.sync_membership(group, user, *added, item.ordinal, item.lane)
                    .await
            }
        }
    }

    /// Runs a blocking engine read, retrying store failures (the store is local: they pass).
    async fn read<T, F>(&self, what: &str, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: Fn(&idbridge_directory::DirectoryEngine) -> Result<Option<T>, EngineError>
            + Send
            + Sync
            + Clone
            + 'static,
    {
        let mut failures = 0;
        loop {
            let engine = self.engine.clone();
            let g = f.clone();
            match tokio::task::spawn_blocking(move || g(&engine)).await {
                Ok(Ok(v)) => return v,
                Ok(Err(e)) => {
                    failures += 1;
                    tracing::warn!(error = %e, what, "reading the local directory failed; retrying");
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, what, "reading the local directory failed; retrying");
                }
            }
            let mut rng = rand::rngs::StdRng::from_entropy();
            tokio::time::sleep(backoff().delay(failures, &mut rng)).await;
        }
    }

    pub(crate) async fn local_user(&self, id: &str) -> Option<StoredUser> {
        let (dir, id) = (self.dir.clone(), id.to_owned());
        self.read("user", move |e| match e.get_user(Some(&dir), &id) {
            Ok(u) => Ok(Some(u)),
            Err(EngineError::NotFound { .. }) => Ok(None),
            Err(err) => Err(err),
        })
        .await
    }

    pub(crate) async fn local_group(&self, id: &str) -> Option<StoredGroup> {
        let (dir, id) = (self.dir.clone(), id.to_owned());
        self.read("group", move |e| match e.get_group(Some(&dir), &id) {
            Ok(g) => Ok(Some(g)),
            Err(EngineError::NotFound { .. }) => Ok(None),
            Err(err) => Err(err),
        })
        .await
    }

    /// The local ids of a user's groups (empty when the user is gone).
    pub(crate) async fn local_groups_of(&self, user: &str) -> Vec<String> {
        let id = user.to_owned();
        self.read("user groups", move |e| match e.user_groups(&id) {
            Ok(gs) => Ok(Some(gs.into_iter().map(|g| g.group.id).collect())),
            Err(EngineError::NotFound { .. }) => Ok(Some(Vec::new())),
            Err(err) => Err(err),
        })
        .await
        .unwrap_or_default()
    }

    /// The local ids of a group's members (empty when the group is gone).
    pub(crate) async fn local_members(&self, group: &str) -> Vec<String> {
        let id = group.to_owned();
        self.read("group members", move |e| match e.group_members(&id) {
            Ok(m) => Ok(Some(m)),
            Err(EngineError::NotFound { .. }) => Ok(Some(Vec::new())),
            Err(err) => Err(err),
        })
        .await
        .unwrap_or_default()
    }

    /// One request, retried while the target is busy, down or refusing the token (forever,
    /// with backoff honouring `Retry-After`) and on timeouts (a few times). With `once_if_ambiguous`,
    /// a failure that may have been applied is returned at once (creates look before retrying).
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        once_if_ambiguous: bool,
    ) -> Result<Answer, CallError> {
        let bytes = match body {
            Some(b) => Some(encode(b).map_err(|v| CallError::Refused {
                what: format!("{method} /{path}"),
                status: 413,
                scim_type: None,
                detail: v.0,
            })?),
            None => None,
        };
        let mut failures: u32 = 0;
        let mut timeouts: u32 = 0;
        let mut rng = rand::rngs::StdRng::from_entropy();
        loop {
            let result = self
                .client
                .call(method.clone(), path, query, bytes.clone())
                .await;
            let e = match result {
                Ok(a) => {
                    self.record_success();
                    return Ok(a);
                }
                Err(e) => e,
            };
            failures += 1;
            if matches!(e, CallError::Timeout { .. }) {
                timeouts += 1;
            }
            let retry = e.retry_forever()
                || (matches!(e, CallError::Timeout { .. }) && timeouts < TIMEOUT_ATTEMPTS);
            let mut delay = backoff().delay(failures, &mut rng);
            if let CallError::Busy {
                retry_after: Some(ra),
                ..
            } = &e
            {
                delay = delay.max((*ra).min(MAX_RETRY_AFTER));
            }
            let message = if retry {
                format!("{e} (retrying in {} ms)", delay.as_millis())
            } else {
                e.to_string()
            };
            tracing::warn!(directory_id = %self.dir, outcome = e.outcome(), error = %message, "SCIM push request failed");
            metrics::counter!("idbridge_scim_push_request_errors_total", "directory" => self.dir.clone(), "outcome" => e.outcome())
                .increment(1);
            self.record_error(message);
            if !retry || (once_if_ambiguous && e.ambiguous()) {
                return Err(e);
            }
            tokio::time::sleep(delay).await;
        }
    }

    fn parked(
        &self,
        (kind, id, idp_id): (ObjectKind, &str, Option<&str>),
        code: &str,
        reason: String,
        status: Option<u16>,
        maybe_created: bool,
    ) -> Outcome {
        tracing::warn!(directory_id = %self.dir, object = kind.object_name(), id, code, %reason, "object not forwarded (parked)");
        metrics::counter!("idbridge_scim_push_parked_total", "directory" => self.dir.clone(), "code" => code.to_owned())
            .increment(1);
        Outcome {
            idmap: Vec::new(),
            parked: vec![(
                id.to_owned(),
                Some(ParkedObject {
                    kind,
                    id: id.to_owned(),
                    idp_id: idp_id.map(str::to_owned),
                    code: code.to_owned(),
                    reason,
                    status,
                    maybe_created,
                    since: Timestamp::now(),
                }),
            )],
        }
    }

    fn parked_by(
        &self,
        kind: ObjectKind,
        id: &str,
        idp_id: Option<&str>,
        e: &CallError,
        creating: bool,
    ) -> Outcome {
        let (code, hint) = match e {
            CallError::Refused { .. } | CallError::NotFound { .. } => (
                "remote_refused",
                "fix the object in the source (it is retried when it changes) or run a reconcile",
            ),
            CallError::Conflict { .. } => (
                "conflict",
                "another remote object holds the same unique value",
            ),
            CallError::Timeout { .. } => (
                "timeout",
                "the target did not answer in time; it is retried when the object changes or by a reconcile",
            ),
            _ => (
                "bad_response",
                "the target's answer was unusable; it is retried when the object changes or by a reconcile",
            ),
        };
        let maybe = creating && e.ambiguous();
        self.parked(
            (kind, id, idp_id),
            code,
            format!("{e}; {hint}"),
            e.status(),
            maybe,
        )
    }

    fn cleared(&self, id: &str) -> (String, Option<ParkedObject>) {
        (id.to_owned(), None)
    }

    fn was_maybe_created(&self, id: &str) -> bool {
        lock(&self.cache)
            .parked
            .get(id)
            .is_some_and(|p| p.maybe_created)
    }

    /// Finds the remote object a local one may already be: by `externalId`, then by its
    /// unique name. `Err(reason)` when the name is held by a remote object of another IdP id.
    async fn lookup(
        &self,
        kind: ObjectKind,
        idp_id: &str,
        name_attr: &str,
        name: &str,
    ) -> Result<Option<Found>, Result<String, CallError>> {
        let endpoint = kind.endpoint();
        let by_ext = self
            .client_find(endpoint, &eq_filter("externalId", idp_id))
            .await
            .map_err(Err)?;
        if let Some(r) = by_ext
            .into_iter()
            .find(|r| get_ci(r, "externalId").and_then(Value::as_str) == Some(idp_id))
        {
            return self.claimable(kind, r).await.map_err(Ok);
        }
        let by_name = self
            .client_find(endpoint, &eq_filter(name_attr, name))
            .await
            .map_err(Err)?;
        for r in by_name {
            let same_name = get_ci(&r, name_attr)
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(name));
            if !same_name {
                continue;
            }
            match get_ci(&r, "externalId").and_then(Value::as_str) {
                None => return self.claimable(kind, r).await.map_err(Ok),
                Some(ext) if ext == idp_id => return self.claimable(kind, r).await.map_err(Ok),
                Some(ext) => {
                    let rid = get_ci(&r, "id").and_then(Value::as_str).unwrap_or("?");
                    return Err(Ok(format!(
                        "the target already has {name_attr} {name:?} on {} {rid} with externalId \
                         {ext:?}, another IdP object (WorkOS requires {name_attr} to be unique): \
                         rename one of them in the source",
                        kind.endpoint()
                    )));
                }
            }
        }
        Ok(None)
    }

    /// A found resource, unless another local object that still exists maps to it (one that
    /// left the directory, e.g. a user deleted and created again by an LDAP or CSV source with
    /// the same IdP id, hands it over).
    async fn claimable(&self, kind: ObjectKind, r: Value) -> Result<Option<Found>, String> {
        let Some(rid) = get_ci(&r, "id").and_then(Value::as_str).map(str::to_owned) else {
            return Ok(None);
        };
        let holder = lock(&self.cache)
            .map
            .iter()
            .find(|(_, e)| e.remote_id == rid)
            .map(|(k, _)| k.clone());
        if let Some(other) = &holder {
            let exists = match kind {
                ObjectKind::User => self.local_user(other).await.is_some(),
                ObjectKind::Group => self.local_group(other).await.is_some(),
            };
            if exists {
                return Err(format!(
                    "the remote object {rid} is already the forward of {other}: the two local \
                     objects share an externalId or name"
                ));
            }
        }
        Ok(Some(Found {
            id: rid,
            resource: r,
            previous_holder: holder,
        }))
    }

    async fn client_find(&self, endpoint: &str, filter: &str) -> Result<Vec<Value>, CallError> {
        let answer = self
            .send(
                Method::GET,
                endpoint,
                &[("filter", filter.to_owned()), ("count", "10".to_owned())],
                None,
                false,
            )
            .await?;
        match get_ci(&answer.body, "Resources") {
            Some(Value::Array(a)) => Ok(a.clone()),
            _ => Ok(Vec::new()),
        }
    }

    /// Creates (or, when it may exist, finds and adopts) a remote object.
    async fn create(
        &self,
        kind: ObjectKind,
        local_id: &str,
        idp_id: &str,
        (name_attr, name): (&str, &str),
        body: &Value,
        mut maybe_sent: bool,
    ) -> Result<Remote, Outcome> {
        let mut conflicts = 0;
        let mut ambiguous: u32 = 0;
        let mut rng = rand::rngs::StdRng::from_entropy();
        loop {
            if maybe_sent {
                match self.lookup(kind, idp_id, name_attr, name).await {
                    Ok(Some(f)) => {
                        tracing::info!(directory_id = %self.dir, object = kind.object_name(), local_id, remote_id = %f.id, "adopted the existing remote object");
                        return Ok(Remote {
                            id: f.id,
                            adopted: true,
                            found: Some(f.resource),
                            previous_holder: f.previous_holder,
                        });
                    }
                    Ok(None) => {}
                    Err(Ok(reason)) => {
                        return Err(self.parked(
                            (kind, local_id, Some(idp_id)),
                            "conflict",
                            reason,
                            Some(409),
                            false,
                        ))
                    }
                    Err(Err(e)) => {
                        return Err(self.parked_by(kind, local_id, Some(idp_id), &e, true))
                    }
                }
                if conflicts > 0 {
                    return Err(self.parked(
                        (kind, local_id, Some(idp_id)),
                        "conflict",
                        format!(
                            "POST /{} answered 409 but no remote object has externalId {idp_id:?} \
                             or {name_attr} {name:?} (another unique value, e.g. an email \
                             shared with an active user, collides): fix it in the source",
                            kind.endpoint()
                        ),
                        Some(409),
                        false,
                    ));
                }
            }
            match self
                .send(Method::POST, kind.endpoint(), &[], Some(body), true)
                .await
            {
                Ok(a) => match a.id() {
                    Some(id) => {
                        return Ok(Remote {
                            id: id.to_owned(),
                            adopted: false,
                            found: None,
                            previous_holder: None,
                        })
                    }
                    None => {
                        let e = CallError::BadResponse {
                            what: format!("POST /{}", kind.endpoint()),
                            status: a.status,
                            problem: "the answer has no id".into(),
                        };
                        self.record_error(e.to_string());
                        return Err(self.parked_by(kind, local_id, Some(idp_id), &e, true));
                    }
                },
                Err(CallError::Conflict { .. }) if conflicts == 0 => {
                    conflicts += 1;
                    maybe_sent = true;
                }
                Err(e) if e.ambiguous() && !matches!(e, CallError::BadResponse { .. }) => {
                    ambiguous += 1;
                    if matches!(e, CallError::Timeout { .. }) && ambiguous >= TIMEOUT_ATTEMPTS {
                        return Err(self.parked_by(kind, local_id, Some(idp_id), &e, true));
                    }
                    maybe_sent = true;
                    tokio::time::sleep(backoff().delay(ambiguous, &mut rng)).await;
                }
                Err(e) => return Err(self.parked_by(kind, local_id, Some(idp_id), &e, true)),
            }
        }
    }

    /// Brings a user to its local state. `force`: send even if the fingerprint is unchanged.
    pub(crate) async fn sync_user(
        &self,
        id: &str,
        snapshot: Option<StoredUser>,
        maybe_sent: bool,
        force: bool,
    ) -> Outcome {
        let local = match snapshot {
            Some(u) => Some(u),
            None => self.local_user(id).await,
        };
        let entry = lock(&self.cache).map.get(id).cloned();
        match local {
            Some(u) if u.user.state == UserState::Active => {
                let maybe = maybe_sent || self.was_maybe_created(id);
                self.push_user(&u, entry, maybe, force).await
            }
            other => self.deprovision_user(id, other, entry, force).await,
        }
    }

    async fn push_user(
        &self,
        u: &StoredUser,
        entry: Option<IdMapEntry>,
        maybe_sent: bool,
        force: bool,
    ) -> Outcome {
        let id = u.user.id.as_str();
        let idp = u.user.idp_id.as_str();
        let schema = self.options.custom_attributes_schema.as_deref();
        let body = match user_body(u, schema) {
            Ok(b) => b,
            Err(v) => {
                return self.parked(
                    (ObjectKind::User, id, Some(idp)),
                    "workos_rule",
                    v.0,
                    None,
                    false,
                )
            }
        };
        if let Some(reason) = self.user_name_taken(id, &body.user_name_folded).await {
            return self.parked(
                (ObjectKind::User, id, Some(idp)),
                "workos_rule",
                reason,
                None,
                false,
            );
        }
        let new_entry = |remote_id: String| IdMapEntry {
            kind: ObjectKind::User,
            remote_id,
            fingerprint: body.fingerprint.clone(),
            user_name: Some(body.user_name_folded.clone()),
            active: true,
        };
        if let Some(e) = &entry {
            if !force && e.fingerprint == body.fingerprint && e.active {
                return Outcome {
                    idmap: Vec::new(),
                    parked: vec![self.cleared(id)],
                };
            }
            let path = format!("Users/{}", e.remote_id);
            match self
                .send(Method::PUT, &path, &[], Some(&body.resource), false)
                .await
            {
                Ok(_) => {
                    return Outcome {
                        idmap: vec![(id.to_owned(), Some(new_entry(e.remote_id.clone())))],
                        parked: vec![self.cleared(id)],
                    }
                }
                // Deleted on the target meanwhile: create it again.
                Err(CallError::NotFound { .. }) => {}
                Err(err) => return self.parked_by(ObjectKind::User, id, Some(idp), &err, false),
            }
        }
        let name = user_name_of(u).unwrap_or_default().to_owned();
        let remote = match self
            .create(
                ObjectKind::User,
                id,
                idp,
                ("userName", &name),
                &body.resource,
                maybe_sent,
            )
            .await
        {
            Ok(r) => r,
            Err(parked) => {
                let mut out = parked;
                if entry.is_some() {
                    out.idmap.push((id.to_owned(), None));
                }
                return out;
            }
        };
        if remote.adopted {
            let stale = remote
                .found
                .as_ref()
                .is_none_or(|f| !differences(&body.resource, f).is_empty());
            if stale {
                let path = format!("Users/{}", remote.id);
                if let Err(err) = self
                    .send(Method::PUT, &path, &[], Some(&body.resource), false)
                    .await
                {
                    let mut out = self.parked_by(ObjectKind::User, id, Some(idp), &err, false);
                    // The adoption itself holds: later changes update the same remote user.
                    let mut e = new_entry(remote.id.clone());
                    e.fingerprint = String::new();
                    out.idmap.push((id.to_owned(), Some(e)));
                    return out;
                }
            }
        }
        let mut out = Outcome {
            idmap: vec![(id.to_owned(), Some(new_entry(remote.id.clone())))],
            parked: vec![self.cleared(id)],
        };
        if let Some(h) = remote.previous_holder.clone() {
            out.idmap.insert(0, (h, None));
        }
        // Memberships that could not be sent while the user had no remote id.
        self.finish(None, None, out);
        self.add_to_remote_groups(id, &remote.id).await;
        Outcome::default()
    }

    /// A WorkOS rule: `userName` unique case-insensitively. Another local user that holds the
    /// same folded userName now makes this one wait (reported), whoever was first.
    async fn user_name_taken(&self, id: &str, folded: &str) -> Option<String> {
        let holder = lock(&self.cache).user_names.get(folded).cloned()?;
        if holder == id {
            return None;
        }
        let other = self.local_user(&holder).await?;
        let same = user_name_of(&other).is_some_and(|n| n.to_lowercase() == folded);
        same.then(|| {
            format!(
                "userName {folded:?} is already forwarded for user {holder}; WorkOS requires \
                 userName to be unique case-insensitively: give one of them another username"
            )
        })
    }

    async fn add_to_remote_groups(&self, user: &str, user_remote: &str) {
        for gid in self.local_groups_of(user).await {
            let Some(g_remote) = lock(&self.cache).remote_id(&gid) else {
                continue;
            };
            let _guard = self.group_locks.lock(&gid).await;
            // Still a member (read under the group's lock, like every membership write).
            if !self.local_groups_of(user).await.contains(&gid) {
                continue;
            }
            let path = format!("Groups/{g_remote}");
            let body = add_members_patch(&[user_remote.to_owned()]);
            if let Err(e) = self
                .send(Method::PATCH, &path, &[], Some(&body), false)
                .await
            {
                tracing::warn!(directory_id = %self.dir, group = %gid, user, error = %e, "adding a user to its remote group failed; a reconcile repairs it");
            }
        }
    }

    async fn deprovision_user(
        &self,
        id: &str,
        local: Option<StoredUser>,
        entry: Option<IdMapEntry>,
        force: bool,
    ) -> Outcome {
        let Some(e) = entry else {
            // Never forwarded (or already removed): nothing remote to change.
            return Outcome {
                idmap: Vec::new(),
                parked: vec![self.cleared(id)],
            };
        };
        let path = format!("Users/{}", e.remote_id);
        if let Some(u) = &local {
            // Still in the directory, inactive: mirror the state and keep its attributes
            // current (whatever the deprovisioning setting: the user did not leave).
            let schema = self.options.custom_attributes_schema.as_deref();
            let (method, payload, fingerprint) = match user_body(u, schema) {
                Ok(b) => (Method::PUT, b.resource, b.fingerprint),
                Err(_) => (Method::PATCH, deactivate_patch(), e.fingerprint.clone()),
            };
            if !force && !e.active && fingerprint == e.fingerprint {
                return Outcome {
                    idmap: Vec::new(),
                    parked: vec![self.cleared(id)],
                };
            }
            return match self.send(method, &path, &[], Some(&payload), false).await {
                Ok(_) => Outcome {
                    idmap: vec![(
                        id.to_owned(),
                        Some(IdMapEntry {
                            fingerprint,
                            active: false,
                            ..e
                        }),
                    )],
                    parked: vec![self.cleared(id)],
                },
                // Gone remotely: nothing to deactivate (an inactive user is never created).
                Err(CallError::NotFound { .. }) => Outcome {
                    idmap: vec![(id.to_owned(), None)],
                    parked: vec![self.cleared(id)],
                },
                Err(err) => self.parked_by(ObjectKind::User, id, None, &err, false),
            };
        }
        // The user left the directory.
        match self.options.deprovision {
            Deprovision::Delete => match self.send(Method::DELETE, &path, &[], None, false).await {
                Ok(_) | Err(CallError::NotFound { .. }) => Outcome {
                    idmap: vec![(id.to_owned(), None)],
                    parked: vec![self.cleared(id)],
                },
                Err(err) => self.parked_by(ObjectKind::User, id, None, &err, false),
            },
            Deprovision::Deactivate => {
                if !force && !e.active {
                    return Outcome {
                        idmap: Vec::new(),
                        parked: vec![self.cleared(id)],
                    };
                }
                match self
                    .send(Method::PATCH, &path, &[], Some(&deactivate_patch()), false)
                    .await
                {
                    Ok(_) => Outcome {
                        idmap: vec![(id.to_owned(), Some(IdMapEntry { active: false, ..e }))],
                        parked: vec![self.cleared(id)],
                    },
                    Err(CallError::NotFound { .. }) => Outcome {
                        idmap: vec![(id.to_owned(), None)],
                        parked: vec![self.cleared(id)],
                    },
                    Err(err) => self.parked_by(ObjectKind::User, id, None, &err, false),
                }
            }
        }
    }

    /// Brings a group to its local state.
    pub(crate) async fn sync_group(
        &self,
        id: &str,
        snapshot: Option<StoredGroup>,
        maybe_sent: bool,
        force: bool,
    ) -> Outcome {
        let _guard = self.group_locks.lock(id).await;
        let local = match snapshot {
            Some(g) => Some(g),
            None => self.local_group(id).await,
        };
        self.sync_group_locked(id, local, maybe_sent, force).await
    }

    async fn sync_group_locked(
        &self,
        id: &str,
        local: Option<StoredGroup>,
        maybe_sent: bool,
        force: bool,
    ) -> Outcome {
        let entry = lock(&self.cache).map.get(id).cloned();
        let Some(g) = local else {
            let Some(e) = entry else {
                return Outcome {
                    idmap: Vec::new(),
                    parked: vec![self.cleared(id)],
                };
            };
            let path = format!("Groups/{}", e.remote_id);
            return match self.send(Method::DELETE, &path, &[], None, false).await {
                Ok(_) | Err(CallError::NotFound { .. }) => Outcome {
                    idmap: vec![(id.to_owned(), None)],
                    parked: vec![self.cleared(id)],
                },
                Err(err) => self.parked_by(ObjectKind::Group, id, None, &err, false),
            };
        };
        let idp = g.group.idp_id.as_str();
        let (base, fingerprint) = match group_body(&g) {
            Ok(b) => b,
            Err(v) => {
                return self.parked(
                    (ObjectKind::Group, id, Some(idp)),
                    "workos_rule",
                    v.0,
                    None,
                    false,
                )
            }
        };
        let new_entry = |remote_id: String| IdMapEntry {
            kind: ObjectKind::Group,
            remote_id,
            fingerprint: fingerprint.clone(),
            user_name: None,
            active: true,
        };
        if let Some(e) = &entry {
            if !force && e.fingerprint == fingerprint {
                return Outcome {
                    idmap: Vec::new(),
                    parked: vec![self.cleared(id)],
                };
            }
            let path = format!("Groups/{}", e.remote_id);
            match self
                .send(
                    Method::PATCH,
                    &path,
                    &[],
                    Some(&group_attributes_patch(&base)),
                    false,
                )
                .await
            {
                Ok(_) => {
                    return Outcome {
                        idmap: vec![(id.to_owned(), Some(new_entry(e.remote_id.clone())))],
                        parked: vec![self.cleared(id)],
                    }
                }
                Err(CallError::NotFound { .. }) => {}
                Err(err) => return self.parked_by(ObjectKind::Group, id, Some(idp), &err, false),
            }
        }
        // Create with the members known remotely (the first chunk; the rest as PATCH adds).
        let members = self.remote_members_of(id).await;
        let first: Vec<String> = members.iter().take(MEMBER_CHUNK).cloned().collect();
        let body = group_with_members(&base, &first);
        let maybe = maybe_sent || self.was_maybe_created(id);
        let remote = match self
            .create(
                ObjectKind::Group,
                id,
                idp,
                ("displayName", &g.group.name),
                &body,
                maybe,
            )
            .await
        {
            Ok(r) => r,
            Err(parked) => {
                let mut out = parked;
                if entry.is_some() {
                    out.idmap.push((id.to_owned(), None));
                }
                return out;
            }
        };
        let path = format!("Groups/{}", remote.id);
        let rest: &[String] = if remote.adopted {
            // An adopted group's members are unknown: set them exactly.
            let full = group_with_members(&base, &first);
            if let Err(err) = self.send(Method::PUT, &path, &[], Some(&full), false).await {
                let mut out = self.parked_by(ObjectKind::Group, id, Some(idp), &err, false);
                let mut e = new_entry(remote.id.clone());
                e.fingerprint = String::new();
                out.idmap.push((id.to_owned(), Some(e)));
                return out;
            }
            members.get(MEMBER_CHUNK..).unwrap_or(&[])
        } else {
            members.get(MEMBER_CHUNK..).unwrap_or(&[])
        };
        for chunk in rest.chunks(MEMBER_CHUNK) {
            if let Err(err) = self
                .send(
                    Method::PATCH,
                    &path,
                    &[],
                    Some(&add_members_patch(chunk)),
                    false,
                )
                .await
            {
                let mut out = self.parked_by(ObjectKind::Group, id, Some(idp), &err, false);
                out.idmap
                    .push((id.to_owned(), Some(new_entry(remote.id.clone()))));
                return out;
            }
        }
        let mut idmap = vec![(id.to_owned(), Some(new_entry(remote.id)))];
        if let Some(h) = remote.previous_holder {
            idmap.insert(0, (h, None));
        }
        Outcome {
            idmap,
            parked: vec![self.cleared(id)],
        }
    }

    /// Remote ids of a group's local members that have been forwarded.
    pub(crate) async fn remote_members_of(&self, group: &str) -> Vec<String> {
        let local = self.local_members(group).await;
        let cache = lock(&self.cache);
        local.iter().filter_map(|u| cache.remote_id(u)).collect()
    }

    /// Sends one membership change, if the local state still has it that way.
    async fn sync_membership(
        &self,
        group: &str,
        user: &str,
        added: bool,
        ordinal: u64,
        lane: usize,
    ) -> Outcome {
        // The user's own earlier changes (its create) run in its lane: wait for them.
        let user_lane = self.lane_of(user);
        if user_lane != lane {
            self.wait_lane_before(user_lane, ordinal).await;
        }
        let _guard = self.group_locks.lock(group).await;
        let member = self.local_groups_of(user).await.iter().any(|g| g == group);
        if member != added {
            // A later event (already in the log) brings the other direction.
            return Outcome::default();
        }
        let (g_remote, u_remote) = {
            let cache = lock(&self.cache);
            (cache.remote_id(group), cache.remote_id(user))
        };
        let (Some(g_remote), Some(u_remote)) = (g_remote, u_remote) else {
            // A group not forwarded is created with its members; a user not forwarded is added
            // to its groups when it is created.
            return Outcome::default();
        };
        let path = format!("Groups/{g_remote}");
        let body = if added {
            add_members_patch(std::slice::from_ref(&u_remote))
        } else {
            remove_member_patch(&u_remote)
        };
        match self
            .send(Method::PATCH, &path, &[], Some(&body), false)
            .await
        {
            Ok(_) => Outcome::default(),
            // Removing a member the target does not have is done.
            Err(CallError::Refused { scim_type, .. })
                if !added && scim_type.as_deref() == Some("noTarget") =>
            {
                Outcome::default()
            }
            Err(CallError::NotFound { .. }) => {
                // The group is gone remotely: create it again with its members.
                let local = self.local_group(group).await;
                let mut out = Outcome::default();
                out.idmap.push((group.to_owned(), None));
                self.finish(None, None, out);
                self.sync_group_locked(group, local, false, true).await
            }
            Err(err) => {
                let idp = self.local_group(group).await.map(|g| g.group.idp_id);
                let mut out = self.parked_by(ObjectKind::Group, group, idp.as_deref(), &err, false);
                if let Some((_, Some(p))) = out.parked.first_mut() {
                    p.reason = format!(
                        "membership of user {user} ({}): {}",
                        if added { "add" } else { "remove" },
                        p.reason
                    );
                }
                out
            }
        }
    }
}

/// Whether a remote user resource is active (`active` absent counts as active).
pub fn remote_active(r: &Value) -> bool {
    match get_ci(r, "active") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => !s.eq_ignore_ascii_case("false"),
        _ => true,
    }
}

/// `members[].value` of a remote group.
pub fn remote_member_ids(r: &Value) -> Option<Vec<String>> {
    match get_ci(r, "members") {
        Some(Value::Array(a)) => Some(
            a.iter()
                .filter_map(|m| get_ci(m, "value").and_then(Value::as_str))
                .map(str::to_owned)
                .collect(),
        ),
        Some(Value::Null) => Some(Vec::new()),
        _ => None,
    }
}
