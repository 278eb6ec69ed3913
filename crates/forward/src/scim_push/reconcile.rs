//! Reconciliation: the remote's Users and Groups (every page) against the local directory.
//!
//! Drift found: `missing` (local object absent remotely), `extra` (remote object with no local
//! counterpart, or one that should be deactivated/deleted), `changed` (attributes differ),
//! `unlinked` (the remote object exists but the id map does not know it: adopted on repair),
//! `parked` (the local object breaks a WorkOS rule), and membership differences. A dry run
//! reports only; otherwise every item is repaired through the same code paths the forwarder
//! uses (so the id map stays consistent), users first, then groups, memberships, extras.

use std::collections::{BTreeSet, HashMap, HashSet};

use futures::StreamExt;
use idbridge_directory::{Cursor, EngineError, Order, Page, PageRequest, StoredGroup, StoredUser};
use idbridge_model::{Timestamp, UserState};
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

use super::client::{Answer, CallError};
use super::records::{Deprovision, IdMapEntry, ObjectKind};
use super::resource::{
    add_members_patch, deactivate_patch, differences, get_ci, group_body, remove_member_patch,
    user_body,
};
use super::runner::{Live, ReconcileSlot};
use super::shared::{lock, Outcome, Shared};
use super::sync::{remote_active, remote_member_ids, MEMBER_CHUNK};

/// Most drift lines kept in a report.
const MAX_DETAILS: usize = 200;
/// Page size of remote lists (idbridge serves at most 200; WorkOS 100).
const REMOTE_PAGE: usize = 100;
/// The most remote objects of one kind a reconcile reads (far above any real directory).
const MAX_REMOTE_OBJECTS: usize = 5_000_000;

/// A running reconcile's progress.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileRun {
    /// Report only.
    pub dry_run: bool,
    /// Start.
    pub started_at: Timestamp,
    /// `listing remote users`, `comparing`, `repairing`...
    pub step: String,
    /// Items of the step done.
    pub done: u64,
    /// Items of the step (0 when unknown).
    pub total: u64,
}

/// Drift of one object kind.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Drift {
    /// Local objects the target lacks.
    pub missing: u64,
    /// Remote objects with no local counterpart (or that should be deprovisioned).
    pub extra: u64,
    /// Objects whose attributes differ.
    pub changed: u64,
    /// Remote objects the id map did not know (adopted on repair).
    pub unlinked: u64,
    /// Local objects WorkOS's rules keep from being sent.
    pub parked: u64,
}

/// Membership drift.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MembershipDrift {
    /// Local memberships the target lacks.
    pub missing: u64,
    /// Remote memberships not in the local directory.
    pub extra: u64,
}

/// What a reconcile found and did.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileReport {
    /// Report only.
    pub dry_run: bool,
    /// Whether it ran to the end (a failed listing stops it before any repair).
    pub ok: bool,
    /// Why it stopped.
    pub error: Option<String>,
    /// Start.
    pub started_at: Timestamp,
    /// End.
    pub finished_at: Timestamp,
    /// Local users compared.
    pub local_users: u64,
    /// Local groups compared.
    pub local_groups: u64,
    /// Remote users listed.
    pub remote_users: u64,
    /// Remote groups listed.
    pub remote_groups: u64,
    /// User drift.
    pub users: Drift,
    /// Group drift.
    pub groups: Drift,
    /// Membership drift.
    pub memberships: MembershipDrift,
    /// Repairs that succeeded (0 on a dry run).
    pub repaired: u64,
    /// Repairs that failed (the objects are parked with the reason).
    pub repair_failures: u64,
    /// One line per drift item (the first 200).
    pub details: Vec<String>,
}

impl ReconcileReport {
    /// Total drift items.
    pub fn drift(&self) -> u64 {
        let d = |x: &Drift| x.missing + x.extra + x.changed + x.unlinked;
        d(&self.users) + d(&self.groups) + self.memberships.missing + self.memberships.extra
    }
}

enum Action {
    User {
        id: String,
        maybe: bool,
    },
    Group {
        id: String,
        maybe: bool,
    },
    DeprovisionRemoteUser(String),
    DeactivateRemoteUser(String),
    DeleteRemoteGroup(String),
    AddMembers {
        group: String,
        remote_group: String,
        users: Vec<String>,
    },
    RemoveMember {
        group: String,
        remote_group: String,
        user: String,
    },
    Forget(String),
}

fn progress(live: &Live, dry_run: bool, started_at: Timestamp, step: &str, done: u64, total: u64) {
    *lock(&live.reconcile) = ReconcileSlot::Running(ReconcileRun {
        dry_run,
        started_at,
        step: step.to_owned(),
        done,
        total,
    });
}

async fn list_remote(
    sh: &Shared,
    live: &Live,
    endpoint: &str,
    dry_run: bool,
    started_at: Timestamp,
) -> Result<Vec<Value>, CallError> {
    let step = format!("listing remote {}", endpoint.to_lowercase());
    let mut out: Vec<Value> = Vec::new();
    let mut start = 1usize;
    loop {
        let answer = sh
            .send(
                Method::GET,
                endpoint,
                &[
                    ("startIndex", start.to_string()),
                    ("count", REMOTE_PAGE.to_string()),
                ],
                None,
                false,
            )
            .await?;
        let what = format!("GET /{endpoint}");
        let (total, page) = list_page(&answer, &what)?;
        let n = page.len();
        out.extend(page);
        if out.len() > MAX_REMOTE_OBJECTS {
            // A target that keeps answering (a huge totalResults, the same page again) must
            // not make a reconcile run forever or grow without bound.
            return Err(CallError::BadResponse {
                what,
                status: answer.status,
                problem: format!(
                    "the target lists more than {MAX_REMOTE_OBJECTS} objects; a reconcile stops there"
                ),
            });
        }
        progress(live, dry_run, started_at, &step, out.len() as u64, total);
        if n == 0 || out.len() as u64 >= total {
            return Ok(out);
        }
        start += n;
    }
}

/// Every item of a WorkOS-paged engine list, oldest first.
fn every_page<T>(
    list: impl Fn(&PageRequest) -> Result<Page<T>, EngineError>,
) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    let mut cursor = Cursor::None;
    loop {
        let page = list(&PageRequest {
            limit: 1000,
            order: Order::Asc,
            cursor,
        })
        .map_err(|e| e.to_string())?;
        out.extend(page.data);
        match page.after {
            Some(a) => cursor = Cursor::After(a),
            None => return Ok(out),
        }
    }
}

async fn local_all(sh: &Shared) -> Result<(Vec<StoredUser>, Vec<StoredGroup>), String> {
    let engine = sh.engine.clone();
    let dir = sh.dir.clone();
    tokio::task::spawn_blocking(move || {
        let users = every_page(|p| engine.list_users(&dir, None, p))?;
        let groups = every_page(|p| engine.list_groups(&dir, None, p))?;
        Ok((users, groups))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// `totalResults` and `Resources` of a SCIM ListResponse page. A page without `Resources` is
/// only accepted as the empty list (`totalResults` 0).
pub fn list_page(answer: &Answer, what: &str) -> Result<(u64, Vec<Value>), CallError> {
    let total = get_ci(&answer.body, "totalResults")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    match get_ci(&answer.body, "Resources") {
        Some(Value::Array(a)) => Ok((total, a.clone())),
        _ if total == 0 => Ok((0, Vec::new())),
        _ => Err(CallError::BadResponse {
            what: what.to_owned(),
            status: answer.status,
            problem: "the answer is not a SCIM ListResponse".into(),
        }),
    }
}

fn id_of(r: &Value) -> Option<String> {
    get_ci(r, "id").and_then(Value::as_str).map(str::to_owned)
}

fn ext_of(r: &Value) -> Option<String> {
    get_ci(r, "externalId")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Runs a reconcile in the target's task (nothing else is in flight meanwhile).
pub(crate) async fn run(sh: &Shared, live: &Live, dry_run: bool) -> ReconcileReport {
    let started_at = Timestamp::now();
    let mut rep = ReconcileReport {
        dry_run,
        ok: false,
        error: None,
        started_at,
        finished_at: started_at,
        local_users: 0,
        local_groups: 0,
        remote_users: 0,
        remote_groups: 0,
        users: Drift::default(),
        groups: Drift::default(),
        memberships: MembershipDrift::default(),
        repaired: 0,
        repair_failures: 0,
        details: Vec::new(),
    };
    tracing::info!(dry_run, "SCIM push reconcile started");
    let fail = |mut rep: ReconcileReport, e: String| {
        tracing::warn!(error = %e, "SCIM push reconcile stopped");
        rep.error = Some(e);
        rep.finished_at = Timestamp::now();
        rep
    };
    let remote_users = match list_remote(sh, live, "Users", dry_run, started_at).await {
        Ok(r) => r,
        Err(e) => return fail(rep, e.to_string()),
    };
    let mut remote_groups = match list_remote(sh, live, "Groups", dry_run, started_at).await {
        Ok(r) => r,
        Err(e) => return fail(rep, e.to_string()),
    };
    // A target that leaves members out of lists: read each group.
    for g in remote_groups.iter_mut() {
        if remote_member_ids(g).is_none() {
            if let Some(id) = id_of(g) {
                match sh
                    .send(Method::GET, &format!("Groups/{id}"), &[], None, false)
                    .await
                {
                    Ok(a) => *g = a.body,
                    Err(e) => return fail(rep, e.to_string()),
                }
            }
        }
    }
    progress(
        live,
        dry_run,
        started_at,
        "reading the local directory",
        0,
        0,
    );
    let (local_users, local_groups) = match local_all(sh).await {
        Ok(l) => l,
        Err(e) => return fail(rep, format!("reading the local directory: {e}")),
    };
    rep.local_users = local_users.len() as u64;
    rep.local_groups = local_groups.len() as u64;
    rep.remote_users = remote_users.len() as u64;
    rep.remote_groups = remote_groups.len() as u64;
    progress(live, dry_run, started_at, "comparing", 0, 0);

    let by_id = |list: &[Value]| -> HashMap<String, Value> {
        list.iter()
            .filter_map(|r| id_of(r).map(|id| (id, r.clone())))
            .collect()
    };
    let by_ext = |list: &[Value]| -> HashMap<String, String> {
        list.iter()
            .filter_map(|r| Some((ext_of(r)?, id_of(r)?)))
            .collect()
    };
    let ru_by_id = by_id(&remote_users);
    let ru_by_ext = by_ext(&remote_users);
    let rg_by_id = by_id(&remote_groups);
    let rg_by_ext = by_ext(&remote_groups);
    let cache: HashMap<String, IdMapEntry> = lock(&sh.cache).map.clone();
    let schema = sh.options.custom_attributes_schema.as_deref();
    let deprovision = sh.options.deprovision;

    let mut details = Vec::new();
    let mut note = |line: String| {
        if details.len() < MAX_DETAILS {
            details.push(line);
        }
    };
    let mut first: Vec<Action> = Vec::new(); // users
    let mut second: Vec<Action> = Vec::new(); // groups
    let mut third: Vec<Action> = Vec::new(); // memberships
    let mut last: Vec<Action> = Vec::new(); // extras
    let mut claimed_users: HashSet<String> = HashSet::new();
    let mut claimed_groups: HashSet<String> = HashSet::new();
    let local_user_ids: HashSet<&str> = local_users.iter().map(|u| u.user.id.as_str()).collect();
    let local_group_ids: HashSet<&str> = local_groups.iter().map(|g| g.group.id.as_str()).collect();

    for u in &local_users {
        let id = u.user.id.clone();
        let entry = cache.get(&id);
        if let Some(e) = entry {
            claimed_users.insert(e.remote_id.clone());
        }
        let remote = entry.and_then(|e| ru_by_id.get(&e.remote_id));
        let label = u
            .user
            .email
            .clone()
            .unwrap_or_else(|| u.user.idp_id.clone());
        if u.user.state == UserState::Active {
            let body = match user_body(u, schema) {
                Ok(b) => b,
                Err(v) => {
                    rep.users.parked += 1;
                    note(format!("parked user {label} ({id}): {v}"));
                    continue;
                }
            };
            match (entry, remote) {
                (Some(_), Some(r)) => {
                    let diffs = differences(&body.resource, r);
                    if !diffs.is_empty() {
                        rep.users.changed += 1;
                        note(format!("changed user {label} ({id}): {}", diffs.join(", ")));
                        first.push(Action::User { id, maybe: false });
                    }
                }
                (Some(_), None) => {
                    rep.users.missing += 1;
                    note(format!(
                        "missing user {label} ({id}): its remote user is gone"
                    ));
                    first.push(Action::User { id, maybe: false });
                }
                (None, _) => {
                    match ru_by_ext.get(&u.user.idp_id) {
                        Some(rid) => {
                            claimed_users.insert(rid.clone());
                            rep.users.unlinked += 1;
                            note(format!("unlinked user {label} ({id}): remote user {rid} has its externalId"));
                            first.push(Action::User { id, maybe: true });
                        }
                        None => {
                            rep.users.missing += 1;
                            note(format!("missing user {label} ({id})"));
                            first.push(Action::User { id, maybe: false });
                        }
                    }
                }
            }
        } else {
            match (entry, remote) {
                (Some(_), Some(r)) => {
                    if remote_active(r) {
                        rep.users.changed += 1;
                        note(format!(
                            "changed user {label} ({id}): inactive locally, active remotely"
                        ));
                        first.push(Action::User { id, maybe: false });
                    }
                }
                (Some(_), None) => last.push(Action::Forget(id)),
                (None, _) => {
                    if let Some(rid) = ru_by_ext.get(&u.user.idp_id) {
                        claimed_users.insert(rid.clone());
                        if ru_by_id.get(rid).is_some_and(remote_active) {
                            rep.users.changed += 1;
                            note(format!(
                                "changed user {rid}: inactive locally ({id}), active remotely"
                            ));
                            last.push(Action::DeactivateRemoteUser(rid.clone()));
                        }
                    }
                }
            }
        }
    }
    // Forwarded users that left the directory.
    for (id, e) in cache.iter().filter(|(_, e)| e.kind == ObjectKind::User) {
        if local_user_ids.contains(id.as_str()) {
            continue;
        }
        claimed_users.insert(e.remote_id.clone());
        match ru_by_id.get(&e.remote_id) {
            Some(r) if deprovision == Deprovision::Delete || remote_active(r) => {
                rep.users.extra += 1;
                note(format!(
                    "extra user {}: {id} left the directory",
                    e.remote_id
                ));
                last.push(Action::User {
                    id: id.clone(),
                    maybe: false,
                });
            }
            Some(_) => {}
            None => last.push(Action::Forget(id.clone())),
        }
    }
    for r in &remote_users {
        let Some(rid) = id_of(r) else { continue };
        if claimed_users.contains(&rid) {
            continue;
        }
        if deprovision == Deprovision::Delete || remote_active(r) {
            rep.users.extra += 1;
            let name = get_ci(r, "userName").and_then(Value::as_str).unwrap_or("?");
            note(format!("extra user {rid} ({name}): not in the directory"));
            last.push(Action::DeprovisionRemoteUser(rid));
        }
    }

    let mut recreated: BTreeSet<String> = BTreeSet::new();
    for g in &local_groups {
        let id = g.group.id.clone();
        let entry = cache.get(&id);
        if let Some(e) = entry {
            claimed_groups.insert(e.remote_id.clone());
        }
        let remote = entry.and_then(|e| rg_by_id.get(&e.remote_id));
        let (base, _) = match group_body(g) {
            Ok(b) => b,
            Err(v) => {
                rep.groups.parked += 1;
                note(format!("parked group {} ({id}): {v}", g.group.name));
                continue;
            }
        };
        match (entry, remote) {
            (Some(e), Some(r)) => {
                let diffs = differences(&base, r);
                if !diffs.is_empty() {
                    rep.groups.changed += 1;
                    note(format!(
                        "changed group {} ({id}): {}",
                        g.group.name,
                        diffs.join(", ")
                    ));
                    second.push(Action::Group {
                        id: id.clone(),
                        maybe: false,
                    });
                }
                // Memberships.
                let local_members = sh.local_members(&id).await;
                let desired: BTreeSet<String> = local_members
                    .iter()
                    .filter_map(|u| cache.get(u).map(|e| e.remote_id.clone()))
                    .collect();
                let actual: BTreeSet<String> = remote_member_ids(r)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let add: Vec<String> = desired.difference(&actual).cloned().collect();
                let remove: Vec<String> = actual.difference(&desired).cloned().collect();
                if !add.is_empty() {
                    rep.memberships.missing += add.len() as u64;
                    note(format!(
                        "group {} ({id}) lacks {} member(s) remotely",
                        g.group.name,
                        add.len()
                    ));
                    third.push(Action::AddMembers {
                        group: id.clone(),
                        remote_group: e.remote_id.clone(),
                        users: add,
                    });
                }
                for user in remove {
                    rep.memberships.extra += 1;
                    note(format!(
                        "group {} ({id}) has extra remote member {user}",
                        g.group.name
                    ));
                    third.push(Action::RemoveMember {
                        group: id.clone(),
                        remote_group: e.remote_id.clone(),
                        user,
                    });
                }
            }
            (Some(_), None) => {
                rep.groups.missing += 1;
                note(format!(
                    "missing group {} ({id}): its remote group is gone",
                    g.group.name
                ));
                recreated.insert(id.clone());
                second.push(Action::Group { id, maybe: false });
            }
            (None, _) => match rg_by_ext.get(&g.group.idp_id) {
                Some(rid) => {
                    claimed_groups.insert(rid.clone());
                    rep.groups.unlinked += 1;
                    note(format!(
                        "unlinked group {} ({id}): remote group {rid} has its externalId",
                        g.group.name
                    ));
                    second.push(Action::Group { id, maybe: true });
                }
                None => {
                    rep.groups.missing += 1;
                    note(format!("missing group {} ({id})", g.group.name));
                    second.push(Action::Group { id, maybe: false });
                }
            },
        }
    }
    for (id, e) in cache.iter().filter(|(_, e)| e.kind == ObjectKind::Group) {
        if local_group_ids.contains(id.as_str()) {
            continue;
        }
        claimed_groups.insert(e.remote_id.clone());
        if rg_by_id.contains_key(&e.remote_id) {
            rep.groups.extra += 1;
            note(format!(
                "extra group {}: {id} left the directory",
                e.remote_id
            ));
            last.push(Action::Group {
                id: id.clone(),
                maybe: false,
            });
        } else {
            last.push(Action::Forget(id.clone()));
        }
    }
    for r in &remote_groups {
        let Some(rid) = id_of(r) else { continue };
        if claimed_groups.contains(&rid) {
            continue;
        }
        rep.groups.extra += 1;
        let name = get_ci(r, "displayName")
            .and_then(Value::as_str)
            .unwrap_or("?");
        note(format!("extra group {rid} ({name}): not in the directory"));
        last.push(Action::DeleteRemoteGroup(rid));
    }
    rep.details = details;
    tracing::info!(drift = rep.drift(), dry_run, "SCIM push reconcile compared");

    if !dry_run {
        let total = (first.len() + second.len() + third.len() + last.len()) as u64;
        let mut done = 0u64;
        for stage in [first, second, third, last] {
            let concurrency = usize::from(sh.options.concurrency.max(1));
            let mut results = futures::stream::iter(stage)
                .map(|a| repair(sh, a))
                .buffer_unordered(concurrency);
            while let Some(ok) = results.next().await {
                done += 1;
                if ok {
                    rep.repaired += 1;
                } else {
                    rep.repair_failures += 1;
                }
                progress(live, dry_run, started_at, "repairing", done, total);
            }
        }
    }
    rep.ok = true;
    rep.finished_at = Timestamp::now();
    tracing::info!(
        repaired = rep.repaired,
        failures = rep.repair_failures,
        "SCIM push reconcile finished"
    );
    rep
}

/// Runs one repair; true when it left no parked object behind.
async fn repair(sh: &Shared, action: Action) -> bool {
    let outcome = match action {
        Action::User { id, maybe } => sh.sync_user(&id, None, maybe, true).await,
        Action::Group { id, maybe } => sh.sync_group(&id, None, maybe, true).await,
        Action::Forget(id) => Outcome {
            idmap: vec![(id, None)],
            parked: Vec::new(),
        },
        Action::DeprovisionRemoteUser(rid) => {
            let path = format!("Users/{rid}");
            let r = match sh.options.deprovision {
                Deprovision::Delete => sh.send(Method::DELETE, &path, &[], None, false).await,
                Deprovision::Deactivate => {
                    sh.send(Method::PATCH, &path, &[], Some(&deactivate_patch()), false)
                        .await
                }
            };
            return matches!(r, Ok(_) | Err(CallError::NotFound { .. }));
        }
        Action::DeactivateRemoteUser(rid) => {
            let r = sh
                .send(
                    Method::PATCH,
                    &format!("Users/{rid}"),
                    &[],
                    Some(&deactivate_patch()),
                    false,
                )
                .await;
            return matches!(r, Ok(_) | Err(CallError::NotFound { .. }));
        }
        Action::DeleteRemoteGroup(rid) => {
            let r = sh
                .send(Method::DELETE, &format!("Groups/{rid}"), &[], None, false)
                .await;
            return matches!(r, Ok(_) | Err(CallError::NotFound { .. }));
        }
        Action::AddMembers {
            group,
            remote_group,
            users,
        } => {
            let _g = sh.group_locks.lock(&group).await;
            let path = format!("Groups/{remote_group}");
            for chunk in users.chunks(MEMBER_CHUNK) {
                if sh
                    .send(
                        Method::PATCH,
                        &path,
                        &[],
                        Some(&add_members_patch(chunk)),
                        false,
                    )
                    .await
                    .is_err()
                {
                    return false;
                }
            }
            return true;
        }
        Action::RemoveMember {
            group,
            remote_group,
            user,
        } => {
            let _g = sh.group_locks.lock(&group).await;
            let path = format!("Groups/{remote_group}");
            return sh
                .send(
                    Method::PATCH,
                    &path,
                    &[],
                    Some(&remove_member_patch(&user)),
                    false,
                )
                .await
                .is_ok();
        }
    };
    let ok = !outcome.parked.iter().any(|(_, p)| p.is_some());
    sh.finish(None, None, outcome);
    ok
}
