//! The sync runner: full and delta runs of one LDAP directory into the directory engine.
//!
//! Rule one: **read everything first, apply after**. A run connects, reads every entry it
//! needs into memory, disconnects, and only then hands the result to the engine. A server that
//! is unreachable, times out, answers an error (a missing base DN included) or sends something
//! the parser chokes on fails the run before the engine sees anything. The reader runs in its
//! own task so a panic inside ldap3's parser fails only that run.
//!
//! Rule two: a full sync never deletes more than the configured share of users without an
//! admin's confirmation (the engine's mass-deletion guard). A refused run is recorded in the
//! sync state as `pending_guard`; [`Syncer::confirm_deletion`] lets the next full run through.
//!
//! Deltas (`entryCSN` on OpenLDAP — `modifyTimestamp`'s one-second resolution made every delta
//! after a bulk load re-read the whole load — `modifyTimestamp` for generic servers,
//! `uSNChanged` on AD) bring adds, updates, renames, disables and group changes; deletions and
//! moves out of the base DN are only visible to the full sync, which runs on its own (longer)
//! schedule and is also the safety net for a write that commits out of order with the cursor.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use idbridge_directory::{DeltaChange, DirectoryEngine, GuardError, Snapshot, SnapshotPolicy};
use ldap3::ldap_escape;
use tracing::Instrument;

use crate::client::Client;
use crate::error::{LdapError, SyncError};
use crate::mapping::{GroupRead, Mapper, UserRead, DN_KEY};
use crate::settings::{Flavor, LdapSettings};
use crate::state::{DeltaCursor, PendingGuard, RunRecord, StateStore, SyncKind, SyncState};

/// AD's LDAP_MATCHING_RULE_IN_CHAIN: transitive membership evaluated by the server.
const IN_CHAIN: &str = "1.2.840.113556.1.4.1941";

/// Progress callbacks (the CLI draws a bar; the scheduler passes [`NoProgress`]).
pub trait Progress: Send + Sync {
    /// A new phase starts (`users`, `groups`, `apply`); `total` when known.
    fn phase(&self, name: &str, total: Option<u64>);
    /// `n` more items done in the current phase.
    fn inc(&self, n: u64);
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn phase(&self, _: &str, _: Option<u64>) {}
    fn inc(&self, _: u64) {}
}

/// One configured LDAP directory: the engine directory it feeds and how to read it.
#[derive(Debug, Clone)]
pub struct LdapSource {
    /// Engine directory id (`directory_...`).
    pub directory_id: String,
    /// Connection and mapping settings.
    pub settings: LdapSettings,
}

/// Runs syncs; one run per directory at a time.
pub struct Syncer {
    engine: Arc<DirectoryEngine>,
    states: StateStore,
    running: Mutex<HashSet<String>>,
}

struct RunSlot<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

impl Drop for RunSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.id);
        }
    }
}

/// Everything a full read produced.
struct FullRead {
    snapshot: Snapshot,
    cursor: Option<DeltaCursor>,
    users_read: u64,
    groups_read: u64,
}

/// A changed group and its members as far as the reader could resolve them.
struct GroupDelta {
    group: GroupRead,
    /// Members already known by idp_id (AD in-chain search).
    user_idps: Vec<String>,
    /// Member DNs to resolve through the engine's DN index (users or nested groups).
    member_dns: Vec<String>,
}

struct DeltaRead {
    users: Vec<UserRead>,
    groups: Vec<GroupDelta>,
    cursor: Option<DeltaCursor>,
}

fn newest(a: Option<String>, b: Option<&String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) if b.as_str() > a.as_str() => Some(b.clone()),
        (Some(a), _) => Some(a),
        (None, b) => b.cloned(),
    }
}

async fn highest_usn(c: &mut Client) -> Result<Option<u64>, LdapError> {
    let dse = c.root_dse(&["highestCommittedUSN"]).await?;
    Ok(dse
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("highestCommittedUSN"))
        .and_then(|(_, v)| v.first())
        .and_then(|v| v.trim().parse().ok()))
}

async fn read_users(
    c: &mut Client,
    s: &LdapSettings,
    m: &Mapper,
    filter: &str,
    progress: &dyn Progress,
) -> Result<Vec<UserRead>, LdapError> {
    let attrs = m.resolved().user_attrs();
    let mut seen = HashSet::new();
    let mut users = Vec::new();
    for base in &s.user_base_dns {
        c.search_each(base, filter, &attrs, |e| {
            if let Some(u) = m.user(&e) {
                if seen.insert(u.input.idp_id.clone()) {
                    users.push(u);
                    progress.inc(1);
                }
            }
            Ok(())
        })
        .await?;
    }
    Ok(users)
}

async fn read_groups(
    c: &mut Client,
    s: &LdapSettings,
    m: &Mapper,
    filter: &str,
    progress: &dyn Progress,
) -> Result<Vec<GroupRead>, LdapError> {
    let r = m.resolved();
    let attrs = r.group_attrs();
    let mut seen = HashSet::new();
    let mut groups = Vec::new();
    for base in s.group_bases() {
        let entries = c.search_all(base, filter, &attrs).await?;
        for mut e in entries {
            if r.flavor == Flavor::ActiveDirectory {
                c.complete_ranges(&mut e, r.range_step).await?;
            }
            if let Some(g) = m.group(&e) {
                if seen.insert(g.input.idp_id.clone()) {
                    groups.push(g);
                    progress.inc(1);
                }
            }
        }
    }
    Ok(groups)
}

/// Direct and nested user members of every group, by idp_id.
fn resolve_memberships(users: &[UserRead], groups: &[GroupRead]) -> Vec<(String, String)> {
    let user_by_dn: HashMap<&str, &str> = users
        .iter()
        .map(|u| (u.dn.as_str(), u.input.idp_id.as_str()))
        .collect();
    let user_by_uid: HashMap<&str, &str> = users
        .iter()
        .filter_map(|u| u.uid.as_deref().map(|uid| (uid, u.input.idp_id.as_str())))
        .collect();
    let group_by_dn: HashMap<&str, usize> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.dn.as_str(), i))
        .collect();
    // A breadth-first walk per group: cycles stop at groups already visited, and no partial
    // result is ever cached (a cached closure cut short by a cycle would lose members).
    let mut pairs = Vec::new();
    for (i, top) in groups.iter().enumerate() {
        let mut visited: HashSet<usize> = HashSet::from([i]);
        let mut queue = vec![i];
        let mut members: HashSet<&str> = HashSet::new();
        while let Some(gi) = queue.pop() {
            let g = &groups[gi];
            for dn in &g.member_dns {
                if let Some(u) = user_by_dn.get(dn.as_str()) {
                    members.insert(u);
                } else if let Some(&child) = group_by_dn.get(dn.as_str()) {
                    if visited.insert(child) {
                        queue.push(child);
                    }
                }
            }
            for uid in &g.member_uids {
                if let Some(u) = user_by_uid.get(uid.as_str()) {
                    members.insert(u);
                }
            }
        }
        let mut sorted: Vec<&str> = members.into_iter().collect();
        sorted.sort_unstable();
        let gid = &top.input.idp_id;
        pairs.extend(sorted.into_iter().map(|u| (gid.clone(), u.to_owned())));
    }
    pairs
}

async fn read_full(s: LdapSettings, progress: Arc<dyn Progress>) -> Result<FullRead, LdapError> {
    let mut c = Client::connect(&s).await?;
    let r = s.resolved();
    let m = Mapper::new(r.clone());
    let usn = if r.flavor == Flavor::ActiveDirectory {
        highest_usn(&mut c).await?
    } else {
        None
    };
    progress.phase("users", None);
    let users = read_users(&mut c, &s, &m, &r.user_filter, progress.as_ref()).await?;
    progress.phase("groups", None);
    let groups = read_groups(&mut c, &s, &m, &r.group_filter, progress.as_ref()).await?;
    c.close().await;

    let cursor = match usn {
        Some(u) => Some(DeltaCursor::Usn(u)),
        None => users
            .iter()
            .map(|u| u.changed.as_ref())
            .chain(groups.iter().map(|g| g.changed.as_ref()))
            .fold(None, newest)
            .map(DeltaCursor::Stamp),
    };
    let memberships = resolve_memberships(&users, &groups);
    Ok(FullRead {
        users_read: users.len() as u64,
        groups_read: groups.len() as u64,
        snapshot: Snapshot {
            users: users.into_iter().map(|u| u.input).collect(),
            groups: groups.into_iter().map(|g| g.input).collect(),
            memberships,
        },
        cursor,
    })
}

fn changed_filter(base_filter: &str, changed_attr: &str, cursor: &DeltaCursor) -> String {
    match cursor {
        // Strictly newer: re-reading the newest second would re-read a whole bulk load.
        DeltaCursor::Stamp(ts) => {
            let v = ldap_escape(ts);
            format!("(&{base_filter}({changed_attr}>={v})(!({changed_attr}={v})))")
        }
        DeltaCursor::Usn(u) => format!("(&{base_filter}({changed_attr}>={}))", u + 1),
    }
}

async fn read_delta(
    s: LdapSettings,
    cursor: DeltaCursor,
    progress: Arc<dyn Progress>,
) -> Result<DeltaRead, LdapError> {
    let mut c = Client::connect(&s).await?;
    let r = s.resolved();
    let m = Mapper::new(r.clone());
    let ad = r.flavor == Flavor::ActiveDirectory;
    let usn = if ad { highest_usn(&mut c).await? } else { None };

    progress.phase("users", None);
    let uf = changed_filter(&r.user_filter, &r.changed, &cursor);
    let users = read_users(&mut c, &s, &m, &uf, progress.as_ref()).await?;
    progress.phase("groups", None);
    let gf = changed_filter(&r.group_filter, &r.changed, &cursor);
    let mut changed = read_groups(&mut c, &s, &m, &gf, progress.as_ref()).await?;

    let mut groups = Vec::new();
    if ad {
        // A nested change alters every ancestor's effective members: refresh those too.
        let mut seen: HashSet<String> = changed.iter().map(|g| g.input.idp_id.clone()).collect();
        let mut ancestors = Vec::new();
        for g in &changed {
            let f = format!(
                "(&{}(member:{IN_CHAIN}:={}))",
                r.group_filter,
                ldap_escape(&g.dn)
            );
            for a in read_groups(&mut c, &s, &m, &f, &NoProgress).await? {
                if seen.insert(a.input.idp_id.clone()) {
                    ancestors.push(a);
                }
            }
        }
        changed.extend(ancestors);
        for g in changed {
            let f = format!(
                "(&{}(memberOf:{IN_CHAIN}:={}))",
                r.user_filter,
                ldap_escape(&g.dn)
            );
            let members = read_users(&mut c, &s, &m, &f, &NoProgress).await?;
            groups.push(GroupDelta {
                user_idps: members.into_iter().map(|u| u.input.idp_id).collect(),
                member_dns: Vec::new(),
                group: g,
            });
        }
    } else {
        for g in changed {
            let mut member_dns = g.member_dns.clone();
            // memberUid values name users by login: find their DNs (in batches).
            for chunk in g.member_uids.chunks(100) {
                let ors: String = chunk
                    .iter()
                    .map(|u| format!("({}={})", r.uid, ldap_escape(u)))
                    .collect();
                let f = format!("(&{}(|{ors}))", r.user_filter);
                for u in read_users(&mut c, &s, &m, &f, &NoProgress).await? {
                    member_dns.push(u.dn);
                }
            }
            groups.push(GroupDelta {
                group: g,
                user_idps: Vec::new(),
                member_dns,
            });
        }
    }
    c.close().await;

    let cursor = match usn {
        Some(u) => Some(DeltaCursor::Usn(u)),
        None => {
            let prev = match &cursor {
                DeltaCursor::Stamp(t) => Some(t.clone()),
                DeltaCursor::Usn(_) => None,
            };
            users
                .iter()
                .map(|u| u.changed.as_ref())
                .chain(groups.iter().map(|g| g.group.changed.as_ref()))
                .fold(prev, newest)
                .map(DeltaCursor::Stamp)
        }
    };
    Ok(DeltaRead {
        users,
        groups,
        cursor,
    })
}

/// Turns a delta read into engine changes, resolving member DNs through the engine's DN index
/// (users first, then groups whose stored members are taken as they are).
fn delta_changes(
    engine: &DirectoryEngine,
    dir_id: &str,
    read: DeltaRead,
) -> Result<Vec<DeltaChange>, SyncError> {
    let by_dn: HashMap<String, String> = read
        .users
        .iter()
        .map(|u| (u.dn.clone(), u.input.idp_id.clone()))
        .collect();
    let mut out: Vec<DeltaChange> = read
        .users
        .into_iter()
        .map(|u| DeltaChange::UpsertUser(u.input))
        .collect();
    let in_batch: HashSet<String> = by_dn.values().cloned().collect();
    for gd in read.groups {
        let mut members: Vec<String> = gd.user_idps;
        for dn in &gd.member_dns {
            if let Some(idp) = by_dn.get(dn) {
                members.push(idp.clone());
            } else if let Some(u) = engine.find_user_by_key(dir_id, DN_KEY, dn)? {
                // The engine still knows users by their DN before this delta: a user renamed
                // in this batch no longer answers to the old DN (a dangling member value).
                if !in_batch.contains(&u.user.idp_id) {
                    members.push(u.user.idp_id);
                }
            } else if let Some(g) = engine.find_group_by_key(dir_id, DN_KEY, dn)? {
                for uid in engine.group_members(&g.group.id)? {
                    if let Ok(u) = engine.get_user(Some(dir_id), &uid) {
                        members.push(u.user.idp_id);
                    }
                }
            }
        }
        members.sort();
        members.dedup();
        let group_idp_id = gd.group.input.idp_id.clone();
        out.push(DeltaChange::UpsertGroup(gd.group.input));
        out.push(DeltaChange::SetMembers {
            group_idp_id,
            user_idp_ids: members,
        });
    }
    Ok(out)
}

fn join_err(e: tokio::task::JoinError) -> LdapError {
    if e.is_panic() {
        LdapError::Malformed("the ldap reader panicked (malformed reply?)".into())
    } else {
        LdapError::Malformed(format!("the ldap reader was cancelled: {e}"))
    }
}

impl Syncer {
    /// A runner over the engine (sync state lives in the engine's store).
    pub fn new(engine: Arc<DirectoryEngine>) -> Self {
        let states = StateStore::new(engine.store().clone());
        Syncer {
            engine,
            states,
            running: Mutex::new(HashSet::new()),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<DirectoryEngine> {
        &self.engine
    }

    /// The directory's sync state.
    pub fn state(&self, dir_id: &str) -> Result<SyncState, SyncError> {
        self.states.load(dir_id)
    }

    /// Records the scheduler's next run times.
    pub fn set_schedule(
        &self,
        dir_id: &str,
        next_full: Option<chrono::DateTime<Utc>>,
        next_delta: Option<chrono::DateTime<Utc>>,
    ) -> Result<SyncState, SyncError> {
        self.states.update(dir_id, |st| {
            st.next_full_at = next_full;
            st.next_delta_at = next_delta;
        })
    }

    /// An admin confirms the deletion the guard stopped: the next full sync applies it.
    /// Returns `None` when nothing is pending.
    pub fn confirm_deletion(&self, dir_id: &str) -> Result<Option<SyncState>, SyncError> {
        self.states.confirm_deletion(dir_id)
    }

    /// Runs one sync. A delta without a cursor (never synced) runs as a full sync.
    pub async fn run(
        &self,
        src: &LdapSource,
        kind: SyncKind,
        progress: Arc<dyn Progress>,
    ) -> Result<RunRecord, SyncError> {
        let dir_id = src.directory_id.clone();
        let _slot = {
            let mut set = self
                .running
                .lock()
                .map_err(|_| SyncError::State("run registry poisoned".into()))?;
            if !set.insert(dir_id.clone()) {
                return Err(SyncError::Busy(dir_id));
            }
            RunSlot {
                set: &self.running,
                id: dir_id.clone(),
            }
        };
        let state = self.states.load(&dir_id)?;
        let kind = match (kind, &state.cursor) {
            (SyncKind::Delta, None) => SyncKind::Full,
            (k, _) => k,
        };
        let span = tracing::info_span!("ldap.sync", directory_id = %dir_id, kind = ?kind);
        self.run_inner(src, kind, state, progress)
            .instrument(span)
            .await
    }

    async fn run_inner(
        &self,
        src: &LdapSource,
        kind: SyncKind,
        state: SyncState,
        progress: Arc<dyn Progress>,
    ) -> Result<RunRecord, SyncError> {
        let dir_id = src.directory_id.as_str();
        let started = Instant::now();
        let mut rec = RunRecord {
            kind: Some(kind),
            started_at: Some(Utc::now()),
            ..RunRecord::default()
        };
        let result = match kind {
            SyncKind::Full => self.full(src, &state, &mut rec, progress).await,
            SyncKind::Delta => self.delta(src, &state, &mut rec, progress).await,
        };
        rec.duration_ms = started.elapsed().as_millis() as u64;
        let kind_label = match kind {
            SyncKind::Full => "full",
            SyncKind::Delta => "delta",
        };
        let outcome_label = match &result {
            Ok(_) => "ok",
            Err(SyncError::Guard(_)) => "guard",
            Err(_) => "error",
        };
        metrics::counter!("idbridge_ldap_sync_runs_total", "kind" => kind_label, "result" => outcome_label)
            .increment(1);
        metrics::histogram!("idbridge_ldap_sync_duration_seconds", "kind" => kind_label)
            .record(started.elapsed().as_secs_f64());

        let err_text = result.as_ref().err().map(|e| e.to_string());
        rec.ok = result.is_ok();
        rec.error = err_text.clone();
        let cursor = result.as_ref().ok().cloned().flatten();
        let guard = match &result {
            Err(SyncError::Guard(GuardError::MassDeletion {
                would_delete,
                total,
                threshold,
            })) => Some(PendingGuard {
                would_delete: *would_delete,
                total: *total,
                threshold: *threshold,
                at: Utc::now(),
            }),
            _ => None,
        };
        let ok = rec.ok;
        let rec2 = rec.clone();
        self.states.update(dir_id, move |st| {
            st.runs += 1;
            if !ok {
                st.failures += 1;
            }
            st.last_error = err_text;
            match kind {
                SyncKind::Full => {
                    st.last_full = Some(rec2);
                    if ok {
                        st.last_full_success_at = Some(Utc::now());
                        st.pending_guard = None;
                        st.deletion_confirmed = false;
                    } else if guard.is_some() {
                        st.pending_guard = guard;
                    }
                }
                SyncKind::Delta => st.last_delta = Some(rec2),
            }
            if ok {
                if let Some(c) = cursor {
                    st.cursor = Some(c);
                }
            }
        })?;
        if ok {
            metrics::gauge!("idbridge_ldap_sync_users", "directory_id" => dir_id.to_owned())
                .set(rec.users_read as f64);
            tracing::info!(?rec, "ldap sync finished");
            Ok(rec)
        } else {
            tracing::warn!(error = ?rec.error, "ldap sync failed; nothing from this run was applied");
            result.map(|_| rec)
        }
    }

    async fn full(
        &self,
        src: &LdapSource,
        state: &SyncState,
        rec: &mut RunRecord,
        progress: Arc<dyn Progress>,
    ) -> Result<Option<DeltaCursor>, SyncError> {
        let t = Instant::now();
        let read = tokio::spawn(read_full(src.settings.clone(), progress.clone()))
            .await
            .map_err(join_err)??;
        rec.read_ms = t.elapsed().as_millis() as u64;
        rec.users_read = read.users_read;
        rec.groups_read = read.groups_read;
        progress.phase("apply", None);
        let policy = SnapshotPolicy {
            max_delete_ratio: src.settings.max_delete_ratio,
            confirmed: state.deletion_confirmed,
        };
        let engine = self.engine.clone();
        let dir_id = src.directory_id.clone();
        let snapshot = read.snapshot;
        let out =
            tokio::task::spawn_blocking(move || engine.apply_snapshot(&dir_id, snapshot, policy))
                .await
                .map_err(|e| SyncError::State(format!("apply task: {e}")))??;
        rec.created = out.created;
        rec.updated = out.updated;
        rec.deleted = out.deleted;
        rec.groups_changed = out.groups_created + out.groups_updated + out.groups_deleted;
        rec.memberships_changed = out.memberships_added + out.memberships_removed;
        rec.events = out.events;
        Ok(read.cursor)
    }

    async fn delta(
        &self,
        src: &LdapSource,
        state: &SyncState,
        rec: &mut RunRecord,
        progress: Arc<dyn Progress>,
    ) -> Result<Option<DeltaCursor>, SyncError> {
        let Some(cursor) = state.cursor.clone() else {
            return Ok(None);
        };
        let t = Instant::now();
        let read = tokio::spawn(read_delta(src.settings.clone(), cursor, progress.clone()))
            .await
            .map_err(join_err)??;
        rec.read_ms = t.elapsed().as_millis() as u64;
        rec.users_read = read.users.len() as u64;
        rec.groups_read = read.groups.len() as u64;
        let next = read.cursor.clone();
        progress.phase("apply", None);
        let engine = self.engine.clone();
        let dir_id = src.directory_id.clone();
        let out = tokio::task::spawn_blocking(move || {
            let changes = delta_changes(&engine, &dir_id, read)?;
            engine
                .apply_delta(&dir_id, changes)
                .map_err(SyncError::from)
        })
        .await
        .map_err(|e| SyncError::State(format!("apply task: {e}")))??;
        rec.updated = out.applied;
        rec.events = out.events;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idbridge_directory::{GroupInput, UserInput};

    fn u(id: &str, dn: &str, uid: &str) -> UserRead {
        UserRead {
            input: UserInput {
                idp_id: id.into(),
                ..UserInput::default()
            },
            dn: dn.into(),
            uid: Some(uid.into()),
            changed: None,
        }
    }

    fn g(id: &str, dn: &str, members: &[&str], uids: &[&str]) -> GroupRead {
        GroupRead {
            input: GroupInput {
                idp_id: id.into(),
                name: id.into(),
                ..GroupInput::default()
            },
            dn: dn.into(),
            member_dns: members.iter().map(|s| s.to_string()).collect(),
            member_uids: uids.iter().map(|s| s.to_string()).collect(),
            changed: None,
        }
    }

    #[test]
    fn nested_and_cyclic_groups_resolve_to_users() {
        let users = vec![
            u("u1", "uid=a", "a"),
            u("u2", "uid=b", "b"),
            u("u3", "uid=c", "c"),
        ];
        let groups = vec![
            g("outer", "cn=outer", &["uid=a", "cn=inner"], &[]),
            g(
                "inner",
                "cn=inner",
                &["uid=b", "cn=outer", "uid=ghost"],
                &["c"],
            ),
        ];
        let mut pairs = resolve_memberships(&users, &groups);
        pairs.sort();
        let want: Vec<(String, String)> = [
            ("inner", "u1"),
            ("inner", "u2"),
            ("inner", "u3"),
            ("outer", "u1"),
            ("outer", "u2"),
            ("outer", "u3"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        // The cycle makes inner ⊇ outer too; nobody unknown leaks in.
        assert_eq!(pairs, want);
    }

    #[test]
    fn delta_filters() {
        assert_eq!(
            changed_filter("(objectClass=user)", "uSNChanged", &DeltaCursor::Usn(41)),
            "(&(objectClass=user)(uSNChanged>=42))"
        );
        assert_eq!(
            changed_filter(
                "(objectClass=inetOrgPerson)",
                "modifyTimestamp",
                &DeltaCursor::Stamp("20260101000000Z".into())
            ),
            "(&(objectClass=inetOrgPerson)(modifyTimestamp>=20260101000000Z)(!(modifyTimestamp=20260101000000Z)))"
        );
    }
}
