//! The sync runner: full and delta runs of one LDAP directory into the directory engine.
//!
//! Rule one: **read everything first, apply after**. A run connects, reads every entry it
//! needs into memory, disconnects, and only then hands the result to the engine. A server that
//! is unreachable, times out, answers an error (a missing base DN included) or sends something
//! the parser chokes on fails the run before the engine sees anything. The reader runs in its
//! own task so a panic inside ldap3's parser fails only that run.
//!
//! Rule two: no run (full, or a delta that saw deletions) deletes more than the configured
//! share of users without an admin's confirmation (the engine's mass-deletion guard for full
//! runs, the same ratio checked here for deltas before anything is applied). A refused run is
//! recorded in the sync state as `pending_guard`; [`Syncer::confirm_deletion`] lets the next
//! run through.
//!
//! Deltas come in two kinds. With RFC 4533 content synchronization (`change_tracking` `sync`,
//! or `auto` when the server offers it — OpenLDAP's syncprov) each user and group search keeps
//! a cookie, and a refreshOnly search with it brings changed entries *and* deletions: entries
//! in state delete / syncIdSet with refreshDeletes, or, when the server answers with a present
//! phase, every stored entry it did not name present — which also covers entries moved out of
//! the base DN or out of the filter. Deletions from a delta pass the same mass-deletion guard as
//! a full sync and, like a full sync's, delete the user or keep it inactive per the directory's
//! `deactivation` setting. Without it (`timestamp`: `entryCSN` on OpenLDAP — `modifyTimestamp`'s
//! one-second resolution made every delta after a bulk load re-read the whole load —
//! `modifyTimestamp` for generic servers, `uSNChanged` on AD) deltas bring adds, updates,
//! renames, disables and group changes; moves out of the base DN and deletions are only
//! visible to the full sync — except on AD, where a delta also finds the users and groups that
//! changed since its cursor outside what it read (moved out of the base DNs or the filters),
//! and the tombstones of objects deleted since (Show Deleted control) when the bind account may
//! list them. The full sync runs on its own (longer) schedule and is also the safety net for a
//! write that commits out of order with the cursor.
//!
//! A cookie the server refuses (e-syncRefreshRequired, a state it never had) fails that delta
//! cleanly and drops the cookies; the next run is then a full sync (a delta without a usable
//! cursor runs as one), which seeds new cookies — chosen over falling back to a full sync
//! inside the delta so a delta stays short and the full sync keeps its own schedule, guard
//! and record. A cookie slapd cannot parse it reads as none and answers with its whole
//! content: nothing is deleted on that (deletions wait for the full sync) and the new cookie
//! replaces the broken one.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use idbridge_directory::{
    Deactivation, DeltaChange, DirectoryEngine, EngineError, GroupInput, GuardError,
    SnapshotPolicy, SnapshotSource, UserInput, UserRecord,
};
use idbridge_model::UserState;
use ldap3::controls::RawControl;
use ldap3::ldap_escape;
use tracing::Instrument;

use crate::client::Entry;
use crate::client::{Client, SyncRead, SyncSearch};
use crate::error::{LdapError, SyncError};
use crate::mapping::{GroupRead, Mapper, UserHead, UserRead, DN_KEY};
use crate::settings::{ChangeTracking, Flavor, LdapSettings, SYNC_REQUEST_OID};
use crate::state::{
    Counted, DeltaCursor, PendingGuard, RunRecord, StateStore, SyncCookies, SyncKind, SyncState,
};

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

/// A user entry as a full read keeps it: the parts the run needs at once, the digest the
/// engine compares with the stored fingerprint, and the entry, built into an engine input
/// only when the engine finds the user changed (a scheduled full sync of an unchanged tree
/// builds none).
struct ReadUser {
    head: UserHead,
    digest: [u8; 32],
    entry: Entry,
}

/// Everything a full read produced; the engine's snapshot source.
struct FullRead {
    mapper: Mapper,
    users: Vec<ReadUser>,
    groups: Vec<GroupInput>,
    /// (index into `groups`, index into `users`).
    memberships: Vec<(u32, u32)>,
    cursor: Option<DeltaCursor>,
    read_ms: u64,
}

impl FullRead {
    fn build(&self, u: &ReadUser) -> idbridge_directory::Result<UserInput> {
        self.mapper
            .user(&u.entry)
            .map(|r| r.input)
            .ok_or_else(|| EngineError::Source(format!("{}: no stable id on rebuild", u.head.dn)))
    }
}

impl SnapshotSource for FullRead {
    fn for_each_user(
        &self,
        f: &mut dyn FnMut(&UserInput) -> idbridge_directory::Result<()>,
    ) -> idbridge_directory::Result<()> {
        self.users.iter().try_for_each(|u| f(&self.build(u)?))
    }

    fn for_each_user_id(
        &self,
        f: &mut dyn FnMut(&str, bool) -> idbridge_directory::Result<()>,
    ) -> idbridge_directory::Result<()> {
        self.users
            .iter()
            .try_for_each(|u| f(&u.head.idp_id, u.head.active))
    }

    fn groups(&self) -> idbridge_directory::Result<Vec<GroupInput>> {
        Ok(self.groups.clone())
    }

    fn for_each_user_record(
        &self,
        f: &mut dyn FnMut(UserRecord<'_>) -> idbridge_directory::Result<()>,
    ) -> idbridge_directory::Result<()> {
        self.users.iter().try_for_each(|u| {
            f(UserRecord::Lazy {
                idp_id: &u.head.idp_id,
                digest: u.digest,
                build: &mut || self.build(u),
            })
        })
    }

    fn for_each_membership(
        &self,
        f: &mut dyn FnMut(&str, &str) -> idbridge_directory::Result<()>,
    ) -> idbridge_directory::Result<()> {
        self.memberships.iter().try_for_each(|&(g, u)| {
            f(
                &self.groups[g as usize].idp_id,
                &self.users[u as usize].head.idp_id,
            )
        })
    }
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
    /// RFC 4533 deltas: what left (users, groups).
    gone: Option<(Gone, Gone)>,
}

/// What RFC 4533 searches of one kind (users or groups) said about entries that left, by raw
/// sync UUID (compared with idp_ids parsed from `entryUUID`'s text form, so a present phase
/// naming every entry costs no string per entry).
#[derive(Debug, Default)]
struct Gone {
    /// Named deleted (state delete, or a syncIdSet with refreshDeletes).
    deleted: HashSet<Vec<u8>>,
    /// Named present or changed by any search of this kind (an entry deleted under one base
    /// but changed under another moved between bases and stays).
    seen: HashSet<Vec<u8>>,
    /// Bases whose refresh ended with a present phase: their stored entries not seen are gone.
    present_bases: Vec<String>,
    /// Every search of this kind ended with a present phase (no DN check needed).
    all_present: bool,
}

impl Gone {
    fn add(&mut self, base: &str, r: &mut SyncRead, first: bool) {
        self.seen.extend(r.present.drain());
        self.seen.extend(r.changed_uuids.iter().cloned());
        self.deleted.extend(r.deleted.drain());
        if r.present_phase {
            self.present_bases.push(base.to_owned());
        }
        self.all_present = (first || self.all_present) && r.present_phase;
    }

    /// Whether anything can have left (else the stored side need not be read).
    fn may_remove(&self) -> bool {
        !self.deleted.is_empty() || !self.present_bases.is_empty()
    }

    /// The stored idp_ids that left, given every stored idp_id and a DN lookup for the mixed
    /// case (some bases with a present phase, some with a delete phase).
    fn resolve(
        &self,
        stored: Vec<String>,
        mut dn_of: impl FnMut(&str) -> Result<Option<String>, SyncError>,
    ) -> Result<Vec<String>, SyncError> {
        let mut out = Vec::new();
        for idp in stored {
            // Never delete what the sync protocol cannot name.
            let Some(key) = uuid_bytes(&idp) else {
                continue;
            };
            if self.seen.contains(key.as_slice()) {
                continue;
            }
            let leaves = if self.deleted.contains(key.as_slice()) {
                true
            } else if self.present_bases.is_empty() {
                false
            } else if self.all_present {
                true
            } else {
                dn_of(&idp)?.is_some_and(|dn| self.present_bases.iter().any(|b| dn_under(&dn, b)))
            };
            if leaves {
                out.push(idp);
            }
        }
        Ok(out)
    }
}

/// `dn` equals `base` or lies below it (case- and space-after-comma-insensitive).
fn dn_under(dn: &str, base: &str) -> bool {
    let norm = |s: &str| s.to_ascii_lowercase().replace(", ", ",");
    let (dn, base) = (norm(dn), norm(base));
    dn == base || dn.ends_with(&format!(",{base}"))
}

/// A 16-byte sync UUID in `entryUUID`'s text form (anything else as hex, which then matches
/// no idp_id and makes the mismatch check fail the run).
fn uuid_text(u: &[u8]) -> String {
    if u.len() != 16 {
        return to_hex(u);
    }
    // A present phase names every entry: one allocation per UUID.
    let mut out = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        push_hex(&mut out, *b);
    }
    out
}

/// `entryUUID`'s text form (8-4-4-4-12 hex digits, any case) as its 16 bytes.
fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let mut out = [0u8; 16];
    let mut digits = b.iter().filter(|&&c| c != b'-');
    for o in out.iter_mut() {
        let hi = (*digits.next()? as char).to_digit(16)?;
        let lo = (*digits.next()? as char).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn push_hex(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 15)] as char);
}

fn to_hex(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len() * 2);
    for &x in b {
        push_hex(&mut out, x);
    }
    out
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// Whether this run uses RFC 4533: `timestamp` never, `sync` always (a server without it is
/// an error), `auto` when the server lists the control and the id attribute is `entryUUID`.
async fn use_sync(c: &mut Client, s: &LdapSettings) -> Result<bool, LdapError> {
    match s.change_tracking() {
        ChangeTracking::Timestamp => Ok(false),
        ChangeTracking::Sync => {
            if c.supports_control(SYNC_REQUEST_OID).await? {
                Ok(true)
            } else {
                Err(LdapError::SyncUnsupported)
            }
        }
        ChangeTracking::Auto => Ok(s.resolved().id.eq_ignore_ascii_case("entryUUID")
            && c.supports_control(SYNC_REQUEST_OID).await?),
    }
}

/// Whether a stored cursor can drive a delta under the current settings (else the delta runs
/// as a full sync, which writes a fitting cursor).
fn cursor_fits(s: &LdapSettings, cursor: &DeltaCursor) -> bool {
    let ad = s.flavor == Flavor::ActiveDirectory;
    match cursor {
        DeltaCursor::Usn(_) => ad,
        DeltaCursor::Stamp(_) => !ad && s.change_tracking() != ChangeTracking::Sync,
        DeltaCursor::Sync(c) => {
            let same = |m: &std::collections::BTreeMap<String, String>, bases: &[String]| {
                m.len() == bases.len() && bases.iter().all(|b| m.contains_key(b))
            };
            !ad && s.change_tracking() != ChangeTracking::Timestamp
                && same(&c.users, &s.user_base_dns)
                && same(&c.groups, s.group_bases())
        }
    }
}

/// Seeds the cookies of a full sync: a cookie-less refreshOnly search per user and group base
/// on a second connection, asking for no attributes. Each search is started and its first
/// message awaited *before* the full sync's own paged read begins — by then the server has
/// fixed the state the cookie will name — so a change is either in that state (and in the
/// paged read, which starts later) or after it (and re-sent by the next delta; upserts are
/// idempotent). The rest is drained in the background while the paged read runs, so the full
/// read itself stays as it is. Returns the task that yields the cookies.
///
/// `None` under `auto` when the database refuses the control (syncprov loaded — the root DSE
/// lists it — but not configured on this database): the run falls back to the timestamp
/// cursor. Under `sync` that is [`LdapError::SyncUnsupported`].
async fn seed_cookies(s: &LdapSettings) -> Result<Option<SeedTask>, LdapError> {
    let r = s.resolved();
    let mut c = Client::connect(s).await?;
    let none = vec!["1.1".to_owned()];
    let mut searches: Vec<(bool, String, SyncSearch)> = Vec::new();
    let mut finished: Vec<(bool, String, SyncRead)> = Vec::new();
    let specs = s
        .user_base_dns
        .iter()
        .map(|b| (true, b, &r.user_filter))
        .chain(s.group_bases().iter().map(|b| (false, b, &r.group_filter)));
    for (user, base, filter) in specs {
        let mut q = c.sync_start(base, filter, &none, None, false).await?;
        if q.step().await? {
            searches.push((user, base.clone(), q));
            continue;
        }
        // Over at once: an empty base, or a refusal to look at now.
        match q.finish().await {
            Ok(read) => finished.push((user, base.clone(), read)),
            Err(LdapError::SyncUnsupported) if s.change_tracking() == ChangeTracking::Auto => {
                tracing::info!(
                    base = %base,
                    "the database refuses RFC 4533; change tracking falls back to timestamps"
                );
                c.close().await;
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Some(tokio::spawn(async move {
        let mut out = SyncCookies::default();
        let mut reads = finished;
        for (user, base, q) in searches {
            reads.push((user, base, q.finish().await?));
        }
        for (user, base, read) in reads {
            let cookie = read.cookie.ok_or_else(|| {
                LdapError::Malformed(format!("the sync search of {base} returned no cookie"))
            })?;
            let m = if user {
                &mut out.users
            } else {
                &mut out.groups
            };
            m.insert(base, to_hex(&cookie));
        }
        c.close().await;
        Ok(out)
    })))
}

/// The background drain of [`seed_cookies`].
type SeedTask = tokio::task::JoinHandle<Result<SyncCookies, LdapError>>;

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

/// A full read's users: heads, digests and entries (see [`ReadUser`]).
async fn read_user_entries(
    c: &mut Client,
    s: &LdapSettings,
    m: &Mapper,
    filter: &str,
    progress: &dyn Progress,
) -> Result<Vec<ReadUser>, LdapError> {
    let attrs = m.resolved().user_attrs();
    let mut seen: HashSet<String, foldhash::fast::RandomState> = HashSet::default();
    let mut users = Vec::new();
    for base in &s.user_base_dns {
        c.search_each(base, filter, &attrs, |entry| {
            if let Some(head) = m.user_head(&entry) {
                if seen.insert(head.idp_id.clone()) {
                    users.push(ReadUser {
                        digest: m.user_digest(&entry),
                        head,
                        entry,
                    });
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

/// Direct and nested user members of every group: (group index, user index) pairs, for
/// `users` given as (normalized DN, lower-cased uid) in order.
fn resolve_memberships<'a>(
    users: impl Iterator<Item = (&'a str, Option<&'a str>)> + Clone,
    groups: &[GroupRead],
) -> Vec<(u32, u32)> {
    type Map<'a, V> = HashMap<&'a str, V, foldhash::fast::RandomState>;
    let user_by_dn: Map<u32> = users
        .clone()
        .enumerate()
        .map(|(i, (dn, _))| (dn, i as u32))
        .collect();
    let user_by_uid: Map<u32> = users
        .enumerate()
        .filter_map(|(i, (_, uid))| uid.map(|uid| (uid, i as u32)))
        .collect();
    let group_by_dn: Map<usize> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.dn.as_str(), i))
        .collect();
    // A breadth-first walk per group: cycles stop at groups already visited, and no partial
    // result is ever cached (a cached closure cut short by a cycle would lose members).
    let mut pairs = Vec::new();
    for i in 0..groups.len() {
        let mut visited: HashSet<usize> = HashSet::from([i]);
        let mut queue = vec![i];
        let mut members: Vec<u32> = Vec::new();
        while let Some(gi) = queue.pop() {
            let g = &groups[gi];
            for dn in &g.member_dns {
                if let Some(&u) = user_by_dn.get(dn.as_str()) {
                    members.push(u);
                } else if let Some(&child) = group_by_dn.get(dn.as_str()) {
                    if visited.insert(child) {
                        queue.push(child);
                    }
                }
            }
            members.extend(
                g.member_uids
                    .iter()
                    .filter_map(|uid| user_by_uid.get(uid.as_str()).copied()),
            );
        }
        members.sort_unstable();
        members.dedup();
        pairs.extend(members.into_iter().map(|u| (i as u32, u)));
    }
    pairs
}

/// A full read. `cookies`: the RFC 4533 cookies the last run left, when they fit the current
/// settings; they are kept instead of seeding new ones (see `Syncer::full`).
async fn read_full(
    s: LdapSettings,
    cookies: Option<SyncCookies>,
    progress: Arc<dyn Progress>,
) -> Result<FullRead, LdapError> {
    let mut c = Client::connect(&s).await?;
    let r = s.resolved();
    let m = Mapper::new(r.clone());
    let usn = if r.flavor == Flavor::ActiveDirectory {
        highest_usn(&mut c).await?
    } else {
        None
    };
    let seeding = if usn.is_none() && cookies.is_none() && use_sync(&mut c, &s).await? {
        seed_cookies(&s).await?
    } else {
        None
    };
    let read = async {
        progress.phase("users", None);
        let users = read_user_entries(&mut c, &s, &m, &r.user_filter, progress.as_ref()).await?;
        progress.phase("groups", None);
        let groups = read_groups(&mut c, &s, &m, &r.group_filter, progress.as_ref()).await?;
        Ok::<_, LdapError>((users, groups))
    }
    .await;
    let (users, groups) = match read {
        Ok(r) => r,
        Err(e) => {
            if let Some(task) = &seeding {
                task.abort();
            }
            return Err(e);
        }
    };
    c.close().await;
    let cookies = match seeding {
        Some(task) => Some(task.await.map_err(join_err)??),
        None => cookies,
    };
    let cursor = match (usn, cookies) {
        (Some(u), _) => Some(DeltaCursor::Usn(u)),
        (None, Some(c)) => Some(DeltaCursor::Sync(c)),
        (None, None) => users
            .iter()
            .map(|u| u.head.changed.as_ref())
            .chain(groups.iter().map(|g| g.changed.as_ref()))
            .fold(None, newest)
            .map(DeltaCursor::Stamp),
    };
    let memberships = resolve_memberships(
        users
            .iter()
            .map(|u| (u.head.dn.as_str(), u.head.uid.as_deref())),
        &groups,
    );
    Ok(FullRead {
        mapper: m,
        users,
        groups: groups.into_iter().map(|g| g.input).collect(),
        memberships,
        cursor,
        read_ms: 0,
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
        // Never asked for: sync cursors take the RFC 4533 path.
        DeltaCursor::Sync(_) => base_filter.to_owned(),
    }
}

/// The groups that contain any of `changed` (directly or through other groups), not already
/// in it: a nested change alters every ancestor's effective members, so a delta refreshes
/// them too (AD asks the server for the chain; elsewhere each level is one search on the
/// member-DN attributes). Cycles end because a group is added once.
async fn with_ancestors(
    c: &mut Client,
    s: &LdapSettings,
    m: &Mapper,
    mut changed: Vec<GroupRead>,
) -> Result<Vec<GroupRead>, LdapError> {
    let r = m.resolved();
    if r.member_dn.is_empty() {
        return Ok(changed);
    }
    let mut seen: HashSet<String> = changed.iter().map(|g| g.input.idp_id.clone()).collect();
    let mut frontier: Vec<String> = changed.iter().map(|g| g.dn.clone()).collect();
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for chunk in frontier.chunks(50) {
            let ors: String = chunk
                .iter()
                .flat_map(|dn| {
                    r.member_dn
                        .iter()
                        .map(move |a| format!("({a}={})", ldap_escape(dn)))
                })
                .collect();
            let f = format!("(&{}(|{ors}))", r.group_filter);
            for parent in read_groups(c, s, m, &f, &NoProgress).await? {
                if seen.insert(parent.input.idp_id.clone()) {
                    next.push(parent.dn.clone());
                    changed.push(parent);
                }
            }
        }
        frontier = next;
    }
    Ok(changed)
}

/// Changed groups with their member DNs; `memberUid` values (login names) are resolved to
/// DNs with batched searches.
async fn expand_groups(
    c: &mut Client,
    s: &LdapSettings,
    m: &Mapper,
    changed: Vec<GroupRead>,
) -> Result<Vec<GroupDelta>, LdapError> {
    let r = m.resolved();
    let mut groups = Vec::new();
    for g in changed {
        let mut member_dns = g.member_dns.clone();
        for chunk in g.member_uids.chunks(100) {
            let ors: String = chunk
                .iter()
                .map(|u| format!("({}={})", r.uid, ldap_escape(u)))
                .collect();
            let f = format!("(&{}(|{ors}))", r.user_filter);
            for u in read_users(c, s, m, &f, &NoProgress).await? {
                member_dns.push(u.dn);
            }
        }
        groups.push(GroupDelta {
            group: g,
            user_idps: Vec::new(),
            member_dns,
        });
    }
    Ok(groups)
}

/// Checks that a changed entry's sync UUID is its idp_id: deletions are named only by UUID,
/// so a server whose UUIDs are not `entryUUID` would make every present-phase delta look
/// like "everyone left".
fn check_uuid(uuid: &[u8], idp_id: &str, dn: &str) -> Result<(), LdapError> {
    if uuid_text(uuid).eq_ignore_ascii_case(idp_id) {
        Ok(())
    } else {
        Err(LdapError::Malformed(format!(
            "{dn}: sync UUID {} differs from its id attribute {idp_id:?}; use change_tracking = \"timestamp\"",
            uuid_text(uuid)
        )))
    }
}

/// An RFC 4533 delta: one refreshOnly search per user and group base with its cookie.
async fn read_delta_sync(
    s: LdapSettings,
    cookies: SyncCookies,
    progress: Arc<dyn Progress>,
) -> Result<DeltaRead, LdapError> {
    let mut c = Client::connect(&s).await?;
    let r = s.resolved();
    let m = Mapper::new(r.clone());
    let cookie = |map: &std::collections::BTreeMap<String, String>, base: &str| {
        map.get(base)
            .and_then(|h| from_hex(h))
            .ok_or_else(|| LdapError::CookieRefused {
                rc: 0,
                text: format!("no usable stored cookie for {base}"),
            })
    };
    let mut next = SyncCookies::default();

    progress.phase("users", None);
    let attrs = r.user_attrs();
    let mut users = Vec::new();
    let mut seen_users = HashSet::new();
    let mut gone_users = Gone::default();
    for (i, base) in s.user_base_dns.iter().enumerate() {
        let old = cookie(&cookies.users, base)?;
        let mut read = c
            .sync_start(base, &r.user_filter, &attrs, Some(old.clone()), true)
            .await?
            .finish()
            .await?;
        gone_users.add(base, &mut read, i == 0);
        for (uuid, e) in &read.changed {
            if let Some(u) = m.user(e) {
                check_uuid(uuid, &u.input.idp_id, &u.dn)?;
                if seen_users.insert(u.input.idp_id.clone()) {
                    users.push(u);
                    progress.inc(1);
                }
            }
        }
        next.unconfirmed |= read.cookie.as_ref().is_some_and(|c| c.is_empty());
        next.users
            .insert(base.clone(), to_hex(&read.cookie.unwrap_or(old)));
    }

    progress.phase("groups", None);
    let attrs = r.group_attrs();
    let mut changed = Vec::new();
    let mut seen_groups = HashSet::new();
    let mut gone_groups = Gone::default();
    for (i, base) in s.group_bases().iter().enumerate() {
        let old = cookie(&cookies.groups, base)?;
        let mut read = c
            .sync_start(base, &r.group_filter, &attrs, Some(old.clone()), true)
            .await?
            .finish()
            .await?;
        gone_groups.add(base, &mut read, i == 0);
        for (uuid, e) in &read.changed {
            if let Some(g) = m.group(e) {
                check_uuid(uuid, &g.input.idp_id, &g.dn)?;
                if seen_groups.insert(g.input.idp_id.clone()) {
                    changed.push(g);
                    progress.inc(1);
                }
            }
        }
        next.unconfirmed |= read.cookie.as_ref().is_some_and(|c| c.is_empty());
        next.groups
            .insert(base.clone(), to_hex(&read.cookie.unwrap_or(old)));
    }
    let changed = with_ancestors(&mut c, &s, &m, changed).await?;
    let groups = expand_groups(&mut c, &s, &m, changed).await?;
    c.close().await;
    Ok(DeltaRead {
        users,
        groups,
        cursor: Some(DeltaCursor::Sync(next)),
        gone: Some((gone_users, gone_groups)),
    })
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
        let changed = with_ancestors(&mut c, &s, &m, changed).await?;
        groups = expand_groups(&mut c, &s, &m, changed).await?;
    }
    let gone = match (&cursor, usn) {
        (DeltaCursor::Usn(prev), Some(now)) if ad => {
            let in_scope: HashSet<&str> = users
                .iter()
                .map(|u| u.input.idp_id.as_str())
                .chain(groups.iter().map(|g| g.group.input.idp_id.as_str()))
                .collect();
            let left = ad_left_between(&mut c, &m, *prev, now, &in_scope).await?;
            let gone = |deleted| Gone {
                deleted,
                ..Gone::default()
            };
            // GUIDs are unique: the users' side matches only stored users, the groups' only
            // stored groups.
            left.map(|left| (gone(left.clone()), gone(left)))
        }
        _ => None,
    };
    c.close().await;

    let cursor = match usn {
        Some(u) => Some(DeltaCursor::Usn(u)),
        None => {
            let prev = match &cursor {
                DeltaCursor::Stamp(t) => Some(t.clone()),
                DeltaCursor::Usn(_) | DeltaCursor::Sync(_) => None,
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
        gone,
    })
}

/// AD's Show Deleted control (MS-ADTS 3.1.1.3.4.1.14): a search also returns tombstones.
const SHOW_DELETED_OID: &str = "1.2.840.113556.1.4.417";

/// What left an AD directory's scope in the USN window `(prev, now]`, as sync keys of their
/// `objectGUID`s: users and groups changed in the window anywhere in the domain naming context
/// that the delta's own reads (`in_scope`, ids) did not return — moved out of the base DNs or
/// no longer matching the filters — and, when the bind account may read them, the tombstones
/// of objects deleted in the window (Show Deleted control; by default only administrators may
/// list Deleted Objects, and deletions then wait for the full sync). The window's upper bound
/// is the USN read before the delta's reads, so an entry changed while they ran is left to the
/// next delta, never taken for gone. `None` when ids are not `objectGUID`s or the root DSE names
/// no naming context.
async fn ad_left_between(
    c: &mut Client,
    m: &Mapper,
    prev: u64,
    now: u64,
    in_scope: &HashSet<&str>,
) -> Result<Option<HashSet<Vec<u8>>>, LdapError> {
    let id_attr = m.resolved().id.clone();
    if !id_attr.eq_ignore_ascii_case("objectGUID") {
        return Ok(None);
    }
    let dse = c.root_dse(&["defaultNamingContext"]).await?;
    let Some(nc) = dse
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("defaultNamingContext"))
        .and_then(|(_, v)| v.first())
        .cloned()
    else {
        tracing::warn!("no defaultNamingContext in the root DSE: deletions wait for the full sync");
        return Ok(None);
    };
    let window = format!("(uSNChanged>={})(uSNChanged<={now})", prev + 1);
    let attrs = [id_attr];
    let mut left = HashSet::new();
    let changed = format!("(&(|(objectClass=user)(objectClass=group)){window})");
    c.search_each(&nc, &changed, &attrs, |e| {
        if let Some(id) = m.id_of(&e) {
            if !in_scope.contains(id.as_str()) {
                left.extend(uuid_bytes(&id).map(|k| k.to_vec()));
            }
        }
        Ok(())
    })
    .await?;
    let show_deleted = RawControl {
        ctype: SHOW_DELETED_OID.into(),
        crit: true,
        val: None,
    };
    let tombstones = format!("(&(isDeleted=TRUE){window})");
    let mut deleted = Vec::new();
    let read = c
        .search_each_with(&nc, &tombstones, &attrs, &[show_deleted], |e| {
            deleted.extend(m.id_of(&e).as_deref().and_then(uuid_bytes));
            Ok(())
        })
        .await;
    match read {
        Ok(_) => left.extend(deleted.into_iter().map(|k| k.to_vec())),
        Err(LdapError::Result { rc, text, .. }) => tracing::warn!(
            rc,
            %text,
            "cannot read AD tombstones (the bind account needs to list Deleted Objects): \
             deletions wait for the next full sync"
        ),
        Err(e) => return Err(e),
    }
    Ok(Some(left))
}

/// Whether a delta's deletions needed (and so consume) the admin's confirmation.
#[derive(Debug, Default, Clone, Copy)]
struct DeltaDeletions {
    used_confirmation: bool,
}

/// The deletions an RFC 4533 delta implies, checked against the mass-deletion guard exactly as
/// a full sync's are (the same ratio over the directory's current users; refused before
/// anything is applied unless an admin confirmed).
fn delta_deletions(
    engine: &DirectoryEngine,
    dir_id: &str,
    gone: &(Gone, Gone),
    policy: SnapshotPolicy,
) -> Result<(Vec<DeltaChange>, Vec<DeltaChange>, DeltaDeletions), SyncError> {
    let (gone_users, gone_groups) = gone;
    // Nothing named deleted and no present phase: nothing left (skip the index scans).
    let stored = if gone_users.may_remove() {
        engine.user_idp_ids(dir_id)?
    } else {
        Vec::new()
    };
    let stored_groups = if gone_groups.may_remove() {
        engine.group_idp_ids(dir_id)?
    } else {
        Vec::new()
    };
    let total = stored.len() as u64;
    let mut users = gone_users.resolve(stored, |idp| {
        Ok(engine.find_user_by_idp_id(dir_id, idp)?.and_then(|u| {
            u.unique_keys
                .into_iter()
                .find(|(k, _)| k == DN_KEY)
                .map(|(_, dn)| dn)
        }))
    })?;
    let groups = gone_groups.resolve(stored_groups, |idp| {
        Ok(engine.find_group_by_idp_id(dir_id, idp)?.and_then(|g| {
            g.unique_keys
                .into_iter()
                .find(|(k, _)| k == DN_KEY)
                .map(|(_, dn)| dn)
        }))
    })?;
    let deletes = engine.get_directory(dir_id)?.settings.deactivation == Deactivation::DeleteUser;
    if !deletes {
        // Kept inactive: only an active user leaves (and counts for the guard), as in a full
        // sync; one already inactive is left as it is.
        let mut active = Vec::with_capacity(users.len());
        for idp in users {
            if engine
                .find_user_by_idp_id(dir_id, &idp)?
                .is_some_and(|u| u.user.state == UserState::Active)
            {
                active.push(idp);
            }
        }
        users = active;
    }
    let would_delete = users.len() as u64;
    let over = would_delete as f64 > policy.max_delete_ratio * total as f64 + 1e-9;
    if over && !policy.confirmed {
        tracing::warn!(
            would_delete,
            total,
            "delta refused by the mass-deletion guard"
        );
        let mut sample = Vec::new();
        for idp in users.iter().take(idbridge_directory::GUARD_SAMPLE) {
            if let Some(u) = engine.find_user_by_idp_id(dir_id, idp)? {
                sample.push(u.user.id);
            }
        }
        return Err(SyncError::Guard(GuardError::MassDeletion {
            would_delete,
            total,
            threshold: policy.max_delete_ratio,
            sample,
        }));
    }
    Ok((
        users
            .into_iter()
            .map(|idp_id| DeltaChange::RemoveUser { idp_id })
            .collect(),
        groups
            .into_iter()
            .map(|idp_id| DeltaChange::DeleteGroup { idp_id })
            .collect(),
        DeltaDeletions {
            used_confirmation: over,
        },
    ))
}

/// Turns a delta read into engine changes, resolving member DNs through the engine's DN index
/// (users first, then groups whose stored members are taken as they are). Order: user
/// deletions (a deleted user leaves its groups with it), upserts, groups and their members,
/// group deletions.
fn delta_changes(
    engine: &DirectoryEngine,
    dir_id: &str,
    read: DeltaRead,
    policy: SnapshotPolicy,
) -> Result<(Vec<DeltaChange>, DeltaDeletions), SyncError> {
    let (mut out, group_deletions, deletions) = match &read.gone {
        Some(g) => delta_deletions(engine, dir_id, g, policy)?,
        None => (Vec::new(), Vec::new(), DeltaDeletions::default()),
    };
    let by_dn: HashMap<String, String> = read
        .users
        .iter()
        .map(|u| (u.dn.clone(), u.input.idp_id.clone()))
        .collect();
    out.extend(
        read.users
            .into_iter()
            .map(|u| DeltaChange::UpsertUser(u.input)),
    );
    let in_batch: HashSet<String> = by_dn.values().cloned().collect();
    // Each group's direct members: users by idp_id, and nested groups of this batch (their
    // members as this delta reads them, not as stored) by index.
    let batch_groups: HashMap<&str, usize> = read
        .groups
        .iter()
        .enumerate()
        .map(|(i, gd)| (gd.group.dn.as_str(), i))
        .collect();
    let mut direct: Vec<(Vec<String>, Vec<usize>)> = Vec::with_capacity(read.groups.len());
    for gd in &read.groups {
        let mut members: Vec<String> = gd.user_idps.clone();
        let mut nested = Vec::new();
        for dn in &gd.member_dns {
            if let Some(idp) = by_dn.get(dn) {
                members.push(idp.clone());
            } else if let Some(&i) = batch_groups.get(dn.as_str()) {
                nested.push(i);
            } else if let Some(u) = engine.find_user_by_key(dir_id, DN_KEY, dn)? {
                // The engine still knows users by their DN before this delta: a user renamed
                // in this batch no longer answers to the old DN (a dangling member value).
                if !in_batch.contains(&u.user.idp_id) {
                    members.push(u.user.idp_id);
                }
            } else if let Some(g) = engine.find_group_by_key(dir_id, DN_KEY, dn)? {
                // A nested group this delta did not touch: its stored (transitive) members.
                for uid in engine.group_members(&g.group.id)? {
                    if let Ok(u) = engine.get_user(Some(dir_id), &uid) {
                        members.push(u.user.idp_id);
                    }
                }
            }
        }
        direct.push((members, nested));
    }
    for (i, gd) in read.groups.into_iter().enumerate() {
        let mut members = Vec::new();
        let mut visited = HashSet::new();
        let mut stack = vec![i];
        while let Some(j) = stack.pop() {
            if !visited.insert(j) {
                continue;
            }
            members.extend(direct[j].0.iter().cloned());
            stack.extend(direct[j].1.iter().copied());
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
    out.extend(group_deletions);
    Ok((out, deletions))
}

/// What a successful run hands back to the state update.
#[derive(Default)]
struct RunOutcome {
    cursor: Option<DeltaCursor>,
    /// The run deleted past the guard on an admin's confirmation (which it consumed).
    used_confirmation: bool,
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

    /// An admin confirms the deletion the guard stopped: the next run applies it.
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
            // Settings changed (tracking mode, base DNs): a full run writes a fitting cursor.
            (SyncKind::Delta, Some(c)) if !cursor_fits(&src.settings, c) => SyncKind::Full,
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

        if let Err(SyncError::Ldap(e)) = &result {
            if e.is_invalid_credentials() {
                // WorkOS's state for it; the next successful run makes it `linked` again.
                if let Err(err) = self.engine.mark_invalid_credentials(dir_id) {
                    tracing::warn!(error = %err, "could not record invalid_credentials");
                }
            }
        }
        let err_text = result.as_ref().err().map(|e| e.to_string());
        rec.ok = result.is_ok();
        rec.error = err_text.clone();
        let cursor = result.as_ref().ok().and_then(|o| o.cursor.clone());
        let used_confirmation = result.as_ref().is_ok_and(|o| o.used_confirmation);
        let cookie_refused = matches!(
            &result,
            Err(SyncError::Ldap(
                LdapError::CookieRefused { .. } | LdapError::SyncUnsupported
            ))
        );
        let guard = match &result {
            Err(SyncError::Guard(GuardError::MassDeletion {
                would_delete,
                total,
                threshold,
                sample,
            })) => Some(PendingGuard {
                would_delete: *would_delete,
                total: *total,
                threshold: *threshold,
                sample: sample.clone(),
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
                SyncKind::Delta => {
                    st.last_delta = Some(rec2);
                    if ok && used_confirmation {
                        st.pending_guard = None;
                        st.deletion_confirmed = false;
                    } else if guard.is_some() {
                        st.pending_guard = guard;
                    }
                }
            }
            if ok {
                if let Some(c) = cursor {
                    st.cursor = Some(c);
                }
            }
            if cookie_refused {
                // The next run (delta or full) is a full sync, which seeds new cookies.
                st.cursor = None;
            }
        })?;
        if ok {
            metrics::gauge!("idbridge_ldap_sync_users", "directory_id" => dir_id.to_owned())
                .set(rec.users_read as f64);
            tracing::info!(?rec, "ldap sync finished");
            Ok(rec)
        } else {
            tracing::warn!(error = ?rec.error, "ldap sync failed; nothing from this run was applied");
            Err(match result {
                Err(e) => e,
                Ok(_) => SyncError::State("run failed without an error".into()),
            })
        }
    }

    async fn full(
        &self,
        src: &LdapSource,
        state: &SyncState,
        rec: &mut RunRecord,
        progress: Arc<dyn Progress>,
    ) -> Result<RunOutcome, SyncError> {
        // The engine reads the stored side while the reader reads the server, then waits for
        // the read and applies it. Rule one holds: nothing is written before the read is
        // complete, and a failed read writes nothing.
        //
        // Cookies the last run left that still fit are kept rather than seeded anew: a delta
        // from them re-sends every change since (upserts and deletions are idempotent), so
        // they stay correct after this run, and seeding would cost the server a second
        // search of the whole tree beside the paged read.
        let kept_cookies = match &state.cursor {
            Some(c @ DeltaCursor::Sync(cookies))
                if !cookies.unconfirmed && cursor_fits(&src.settings, c) =>
            {
                Some(cookies.clone())
            }
            _ => None,
        };
        let t = Instant::now();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let settings = src.settings.clone();
        let reader_progress = progress.clone();
        let reader = tokio::spawn(async move {
            let mut read = read_full(settings, kept_cookies, reader_progress.clone()).await?;
            read.read_ms = t.elapsed().as_millis() as u64;
            reader_progress.phase("apply", None);
            // The receiver is gone only when the apply task failed; its error is reported.
            let _ = tx.send(read);
            Ok::<_, LdapError>(())
        });
        let policy = SnapshotPolicy {
            max_delete_ratio: src.settings.max_delete_ratio,
            confirmed: state.deletion_confirmed,
        };
        let engine = self.engine.clone();
        let dir_id = src.directory_id.clone();
        let applied = tokio::task::spawn_blocking(move || {
            engine.apply_snapshot_read_ahead(&dir_id, policy, || rx.blocking_recv().ok())
        })
        .await;
        let (out, read) = match applied {
            Ok(Ok(Some(done))) => done,
            // No read: the reader's own failure (an LDAP error, a panic in the parser) says why.
            Ok(Ok(None)) => {
                reader.await.map_err(join_err)??;
                return Err(SyncError::State("the read ended without a result".into()));
            }
            Ok(Err(e)) => {
                reader.abort();
                return Err(e.into());
            }
            Err(e) => {
                reader.abort();
                return Err(SyncError::State(format!("apply task: {e}")));
            }
        };
        rec.read_ms = read.read_ms;
        rec.users_read = read.users.len() as u64;
        rec.groups_read = read.groups.len() as u64;
        rec.record_counts(&Counted::from(&out));
        rec.events = out.events;
        let cursor = read.cursor.clone();
        // Freeing a read of a big tree takes a while; it need not hold up the run's end.
        tokio::task::spawn_blocking(move || drop(read));
        Ok(RunOutcome {
            cursor,
            used_confirmation: state.deletion_confirmed,
        })
    }

    async fn delta(
        &self,
        src: &LdapSource,
        state: &SyncState,
        rec: &mut RunRecord,
        progress: Arc<dyn Progress>,
    ) -> Result<RunOutcome, SyncError> {
        let Some(cursor) = state.cursor.clone() else {
            return Ok(RunOutcome::default());
        };
        let t = Instant::now();
        let read = match cursor {
            DeltaCursor::Sync(cookies) => {
                tokio::spawn(read_delta_sync(
                    src.settings.clone(),
                    cookies,
                    progress.clone(),
                ))
                .await
            }
            other => tokio::spawn(read_delta(src.settings.clone(), other, progress.clone())).await,
        }
        .map_err(join_err)??;
        rec.read_ms = t.elapsed().as_millis() as u64;
        rec.users_read = read.users.len() as u64;
        rec.groups_read = read.groups.len() as u64;
        let next = read.cursor.clone();
        progress.phase("apply", None);
        let engine = self.engine.clone();
        let dir_id = src.directory_id.clone();
        let policy = SnapshotPolicy {
            max_delete_ratio: src.settings.max_delete_ratio,
            confirmed: state.deletion_confirmed,
        };
        let states = self.states.clone();
        let (out, deletions) = tokio::task::spawn_blocking(move || {
            let (changes, deletions) = delta_changes(&engine, &dir_id, read, policy)?;
            // The changes and the cursor that covers them: one commit.
            engine
                .apply_delta_with(&dir_id, changes, |cs| {
                    states.stage_cursor(cs, &dir_id, next, deletions.used_confirmation)
                })
                .map(|o| (o, deletions))
                .map_err(SyncError::from)
        })
        .await
        .map_err(|e| SyncError::State(format!("apply task: {e}")))??;
        rec.record_counts(&Counted::from(&out));
        rec.events = out.events;
        Ok(RunOutcome {
            // Already committed with the changes it covers.
            cursor: None,
            used_confirmation: deletions.used_confirmation,
        })
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
        let users = [
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
        let mut pairs: Vec<(String, String)> = resolve_memberships(
            users.iter().map(|u| (u.dn.as_str(), u.uid.as_deref())),
            &groups,
        )
        .into_iter()
        .map(|(g, u)| {
            (
                groups[g as usize].input.idp_id.clone(),
                users[u as usize].input.idp_id.clone(),
            )
        })
        .collect();
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
    fn sync_uuids_cookies_and_dns() {
        let raw: Vec<u8> = (0u8..16).collect();
        assert_eq!(uuid_text(&raw), "00010203-0405-0607-0809-0a0b0c0d0e0f");
        assert_eq!(uuid_text(&[0xab, 0x01]), "ab01");
        let upper = "00010203-0405-0607-0809-0A0B0C0D0E0F";
        assert_eq!(uuid_bytes(upper).map(|b| b.to_vec()), Some(raw.clone()));
        assert_eq!(uuid_bytes("not-a-uuid"), None);
        assert_eq!(uuid_bytes("00010203x0405-0607-0809-0a0b0c0d0e0f"), None);
        assert_eq!(uuid_bytes("0001020g-0405-0607-0809-0a0b0c0d0e0f"), None);
        let cookie = b"rid=000,csn=20260101000000.000000Z#000000#000#000000".to_vec();
        assert_eq!(from_hex(&to_hex(&cookie)), Some(cookie));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert!(dn_under("uid=a,ou=People,dc=x", "ou=people, dc=x"));
        assert!(dn_under("ou=People,dc=x", "ou=People,dc=x"));
        assert!(!dn_under("uid=a,ou=OtherPeople,dc=x", "ou=People,dc=x"));
    }

    fn read(present: &[u8], changed: &[u8], deleted: &[u8], present_phase: bool) -> SyncRead {
        let ids = |v: &[u8]| -> HashSet<Vec<u8>> { v.iter().map(|&b| vec![b; 16]).collect() };
        SyncRead {
            changed: Vec::new(),
            changed_uuids: ids(changed),
            present: ids(present),
            deleted: ids(deleted),
            present_phase,
            cookie: None,
        }
    }

    #[test]
    fn gone_follows_the_refresh_phase() {
        let id = |b: u8| uuid_text(&[b; 16]);
        let stored: Vec<String> = (1..=5).map(id).collect();
        // Present phase: whatever was neither present nor changed left.
        let mut g = Gone::default();
        g.add("ou=a", &mut read(&[1, 2], &[3], &[], true), true);
        let mut with_legacy = stored.clone();
        with_legacy.push("not-a-uuid".into());
        let out = g.resolve(with_legacy, |_| Ok(None)).expect("resolve");
        assert_eq!(
            out,
            vec![id(4), id(5)],
            "an id sync cannot name is never deleted"
        );
        // Delete phase: only what was named deleted.
        let mut g = Gone::default();
        g.add("ou=a", &mut read(&[], &[3], &[5], false), true);
        let out = g.resolve(stored.clone(), |_| Ok(None)).expect("resolve");
        assert_eq!(out, vec![id(5)]);
        // Mixed: a present-phase base only deletes stored entries under it; an entry deleted
        // under one base but changed under another moved and stays.
        let mut g = Gone::default();
        g.add("ou=a", &mut read(&[1], &[], &[], true), true);
        g.add("ou=b", &mut read(&[], &[2], &[2, 3], false), false);
        assert!(!g.all_present);
        let out = g
            .resolve(stored, |idp| {
                Ok(Some(if idp == id(4) {
                    "uid=4,ou=a".to_owned()
                } else {
                    "uid=x,ou=b".to_owned()
                }))
            })
            .expect("resolve");
        assert_eq!(out, vec![id(3), id(4)]);
    }

    #[test]
    fn cursors_fit_the_tracking_mode() {
        let mut s = LdapSettings::new("ldap://h", Flavor::Openldap, "ou=P,dc=x");
        let mut cookies = SyncCookies::default();
        cookies.users.insert("ou=P,dc=x".into(), "00".into());
        cookies.groups.insert("ou=P,dc=x".into(), "00".into());
        let sync = DeltaCursor::Sync(cookies);
        let stamp = DeltaCursor::Stamp("1".into());
        assert!(cursor_fits(&s, &sync) && cursor_fits(&s, &stamp));
        s.group_base_dns = vec!["ou=G,dc=x".into()];
        assert!(!cursor_fits(&s, &sync), "a new base needs a new cookie");
        s.group_base_dns.clear();
        s.change_tracking = Some(ChangeTracking::Timestamp);
        assert!(!cursor_fits(&s, &sync) && cursor_fits(&s, &stamp));
        s.change_tracking = Some(ChangeTracking::Sync);
        assert!(cursor_fits(&s, &sync) && !cursor_fits(&s, &stamp));
        assert!(!cursor_fits(&s, &DeltaCursor::Usn(1)));
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
