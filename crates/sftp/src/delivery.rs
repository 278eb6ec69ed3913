//! Processing one delivery: ingest → apply as a full snapshot → record the outcome.
//!
//! Every delivery, applied or not, leaves a [`DeliveryRecord`] in the `sftp.deliveries` table
//! (status per directory for the admin API and the CLI). A rejected one (bad file, or the
//! mass-deletion guard) also appends `dsync.delivery_rejected` to the event log in the SAME
//! commit as its record, and leaves a readable report in the uploader's inbox.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use idbridge_directory::{DirectoryEngine, EngineError, SnapshotOutcome, SnapshotPolicy};
use idbridge_model::{Event, EventKind, Timestamp};
use idbridge_store::{ChangeSet, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::feed::{
    validate_only, CsvSnapshot, DeliveryFiles, IngestError, IngestOptions, Problem, Rejection,
    RowCounts, DELIVERY_FILES,
};

/// `<directory id>/<delivery id>` → [`DeliveryRecord`] (JSON); delivery ids are ULID-ordered,
/// so a reverse prefix scan lists a directory's deliveries newest first.
pub(crate) const DELIVERIES_TABLE: &str = "sftp.deliveries";
/// Where processed files go inside an inbox.
pub const ARCHIVE_DIR: &str = "archive";
/// Where rejection reports go inside an inbox.
pub const REJECTED_DIR: &str = "rejected";

/// How the files arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliverySource {
    /// Uploaded to the embedded SFTP server.
    Push,
    /// Fetched from the customer's SFTP server.
    Pull,
    /// `idbridge directory import`.
    Import,
}

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Applied (possibly with no changes).
    Applied,
    /// Refused: the files are bad or the mass-deletion guard stopped it. Nothing changed.
    Rejected,
    /// Our side failed (I/O, store); may have applied part of a very large snapshot (see the
    /// engine's chunking notes); retrying the same files finishes it.
    Failed,
}

/// The serializable counts of a [`SnapshotOutcome`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// Users created.
    pub users_created: u64,
    /// Users updated.
    pub users_updated: u64,
    /// Users deleted.
    pub users_deleted: u64,
    /// Groups created.
    pub groups_created: u64,
    /// Groups updated.
    pub groups_updated: u64,
    /// Groups deleted.
    pub groups_deleted: u64,
    /// Memberships added.
    pub memberships_added: u64,
    /// Memberships removed.
    pub memberships_removed: u64,
    /// Events appended.
    pub events: u64,
}

impl From<SnapshotOutcome> for Changes {
    fn from(o: SnapshotOutcome) -> Self {
        Changes {
            users_created: o.created,
            users_updated: o.updated,
            users_deleted: o.deleted,
            groups_created: o.groups_created,
            groups_updated: o.groups_updated,
            groups_deleted: o.groups_deleted,
            memberships_added: o.memberships_added,
            memberships_removed: o.memberships_removed,
            events: o.events,
        }
    }
}

/// One delivery as recorded (and served by `GET /admin/directories/{id}/deliveries`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// Always `directory_delivery`.
    pub object: String,
    /// `delivery_<ULID>`.
    pub id: String,
    /// The directory.
    pub directory_id: String,
    /// Its organization.
    pub organization_id: String,
    /// Push, pull or import.
    pub source: DeliverySource,
    /// Outcome.
    pub status: DeliveryStatus,
    /// The files that made up the delivery.
    pub files: Vec<String>,
    /// Data rows per file (zero for files not read).
    pub rows: RowCounts,
    /// What the snapshot changed (applied deliveries).
    pub changes: Option<Changes>,
    /// Why it was refused (rejected deliveries).
    pub problems: Vec<Problem>,
    /// Problems beyond those listed.
    pub more_problems: u64,
    /// Our own failure (failed deliveries).
    pub error: Option<String>,
    /// Where the report was written, relative to the inbox (rejected push/pull deliveries).
    pub report: Option<String>,
    /// The mass-deletion guard stopped it (see [`crate::pending`] to review and confirm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardStop>,
    /// When processing started.
    pub received_at: Timestamp,
    /// Processing time.
    pub duration_ms: u64,
}

/// Why the mass-deletion guard stopped a delivery, and where its files are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardStop {
    /// Users it would have removed.
    pub would_delete: u64,
    /// Users in the directory.
    pub total: u64,
    /// The directory's ratio.
    pub threshold: f64,
    /// The folder holding the delivery's files (the archive), for a confirmation.
    pub files_dir: Option<PathBuf>,
}

/// Errors of the delivery layer itself (the outcome of a bad file is a record, not an error).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The directory does not exist or the engine refused to read it.
    #[error("directory: {0}")]
    Engine(#[from] EngineError),
    /// Recording the outcome failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Moving files or writing the report failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DeliveryError {
    let what = what.into();
    move |source| DeliveryError::Io { what, source }
}

/// Applies deliveries for directories of one engine.
#[derive(Clone)]
pub struct Processor {
    engine: Arc<DirectoryEngine>,
    /// Mass-deletion guard settings (default: stop above 10%).
    pub policy: SnapshotPolicy,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// A delivery moved out of the inbox, ready for [`Processor::process_claimed`].
#[derive(Debug)]
pub struct Claimed {
    /// The archived files.
    pub files: DeliveryFiles,
    meta: Meta,
}

/// Identity of a delivery being processed.
#[derive(Debug)]
struct Meta {
    id: String,
    received_at: Timestamp,
    /// Where the report will be, if the delivery is rejected (inbox deliveries only).
    report_rel: Option<String>,
}

fn new_delivery_id() -> String {
    format!("delivery_{}", ulid::Ulid::new())
}

/// A file-name-safe UTC stamp (`2026-11-23T11-45-00.123Z`), so reports sort by time.
fn file_stamp(t: Timestamp) -> String {
    t.to_string().replace(':', "-")
}

impl Processor {
    /// A processor with the default guard.
    pub fn new(engine: Arc<DirectoryEngine>) -> Self {
        Processor {
            engine,
            policy: SnapshotPolicy::default(),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<DirectoryEngine> {
        &self.engine
    }

    /// Processes the delivery waiting in `inbox` (if it has a `users.csv`): [`Self::claim`]
    /// then [`Self::process_claimed`]. Returns `None` when there is no delivery. Blocking.
    pub fn process_inbox(
        &self,
        dir_id: &str,
        inbox: &Path,
        source: DeliverySource,
    ) -> Result<Option<DeliveryRecord>, DeliveryError> {
        match Self::claim(inbox)? {
            Some(c) => self.process_claimed(dir_id, inbox, c, source).map(Some),
            None => Ok(None),
        }
    }

    /// Moves the delivery's files out of the inbox into `archive/<stamp>_<id>/` (renames
    /// only: quick, so the server does it while holding its upload lock), so later uploads
    /// cannot mix into a delivery being processed. `None` when there is no `users.csv`.
    pub fn claim(inbox: &Path) -> Result<Option<Claimed>, DeliveryError> {
        if DeliveryFiles::in_dir(inbox).is_none() {
            return Ok(None);
        }
        let id = new_delivery_id();
        let received_at = Timestamp::now();
        let name = format!("{}_{}", file_stamp(received_at), id);
        let archive = inbox.join(ARCHIVE_DIR).join(&name);
        std::fs::create_dir_all(&archive).map_err(io_err("creating the archive folder"))?;
        for f in DELIVERY_FILES {
            let from = inbox.join(f);
            match std::fs::symlink_metadata(&from) {
                Ok(m) if m.file_type().is_file() => std::fs::rename(&from, archive.join(f))
                    .map_err(io_err(format!("archiving {f}")))?,
                _ => {}
            }
        }
        Ok(DeliveryFiles::in_dir(&archive).map(|files| Claimed {
            files,
            meta: Meta {
                id,
                received_at,
                report_rel: Some(format!("{REJECTED_DIR}/{name}.txt")),
            },
        }))
    }

    /// Applies a claimed delivery; a rejection report goes to `rejected/<stamp>_<id>.txt` in
    /// the inbox. Blocking.
    pub fn process_claimed(
        &self,
        dir_id: &str,
        inbox: &Path,
        claimed: Claimed,
        source: DeliverySource,
    ) -> Result<DeliveryRecord, DeliveryError> {
        let Claimed { files, meta } = claimed;
        let record = self.run(dir_id, &files, source, meta, &mut |_| {})?;
        if let (DeliveryStatus::Rejected, Some(rel)) = (record.status, &record.report) {
            let rejected_dir = inbox.join(REJECTED_DIR);
            std::fs::create_dir_all(&rejected_dir)
                .map_err(io_err("creating the rejected folder"))?;
            std::fs::write(inbox.join(rel), report_text(&record))
                .map_err(io_err("writing the report"))?;
        }
        Ok(record)
    }

    /// Processes a set of files in place (nothing is moved): the CLI import. Blocking.
    pub fn process_files(
        &self,
        dir_id: &str,
        files: &DeliveryFiles,
        source: DeliverySource,
        progress: &mut dyn FnMut(u64),
    ) -> Result<DeliveryRecord, DeliveryError> {
        self.run(
            dir_id,
            files,
            source,
            Meta {
                id: new_delivery_id(),
                received_at: Timestamp::now(),
                report_rel: None,
            },
            progress,
        )
    }

    fn run(
        &self,
        dir_id: &str,
        files: &DeliveryFiles,
        source: DeliverySource,
        meta: Meta,
        progress: &mut dyn FnMut(u64),
    ) -> Result<DeliveryRecord, DeliveryError> {
        let Meta {
            id,
            received_at,
            report_rel,
        } = meta;
        let span =
            tracing::info_span!("sftp.delivery", directory_id = dir_id, delivery_id = %id, ?source);
        let _e = span.enter();
        let started = Instant::now();
        let dir = self.engine.get_directory(dir_id)?;
        let opts = IngestOptions::for_settings(&dir.settings);
        let mut names = vec![crate::feed::USERS_FILE.to_owned()];
        if files.groups.is_some() {
            names.push(crate::feed::GROUPS_FILE.to_owned());
        }
        if files.user_groups.is_some() {
            names.push(crate::feed::USER_GROUPS_FILE.to_owned());
        }
        let mut record = DeliveryRecord {
            object: "directory_delivery".to_owned(),
            id,
            directory_id: dir_id.to_owned(),
            organization_id: dir.directory.organization_id.clone(),
            source,
            status: DeliveryStatus::Applied,
            files: names,
            rows: RowCounts::default(),
            changes: None,
            problems: Vec::new(),
            more_problems: 0,
            error: None,
            report: None,
            guard: None,
            received_at,
            duration_ms: 0,
        };
        match validate_only(files, &opts, progress) {
            Err(IngestError::Rejected(r)) => {
                record.status = DeliveryStatus::Rejected;
                record.problems = r.problems;
                record.more_problems = r.more;
            }
            Err(e @ IngestError::Io { .. }) => {
                record.status = DeliveryStatus::Failed;
                record.error = Some(e.to_string());
            }
            Ok(rows) => {
                record.rows = rows;
                let source = CsvSnapshot::new(files, &opts, progress);
                match self
                    .engine
                    .apply_snapshot_from(dir_id, &source, self.policy)
                {
                    Ok(outcome) => record.changes = Some(outcome.into()),
                    Err(EngineError::Guard(g)) => {
                        let idbridge_directory::GuardError::MassDeletion {
                            would_delete,
                            total,
                            threshold,
                            ..
                        } = &g;
                        record.guard = Some(GuardStop {
                            would_delete: *would_delete,
                            total: *total,
                            threshold: *threshold,
                            files_dir: files.users.parent().map(Path::to_path_buf),
                        });
                        let r = Rejection::single(
                            crate::feed::USERS_FILE,
                            format!("{g}; nothing was changed. An administrator can review and apply it: GET and POST /admin/directories/{dir_id}/pending_deletion[/confirm], or `idbridge directory confirm-deletion {dir_id}`"),
                        );
                        record.status = DeliveryStatus::Rejected;
                        record.problems = r.problems;
                    }
                    Err(EngineError::Invalid(why)) => {
                        record.status = DeliveryStatus::Rejected;
                        record.problems = Rejection::single(crate::feed::USERS_FILE, why).problems;
                    }
                    Err(e) => {
                        record.status = DeliveryStatus::Failed;
                        record.error = Some(e.to_string());
                    }
                }
            }
        }
        if record.status == DeliveryStatus::Rejected {
            record.report = report_rel;
        }
        record.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.commit_record(&record)?;
        crate::metrics::delivery(&record);
        match record.status {
            DeliveryStatus::Applied => {
                tracing::info!(rows = record.rows.users, changes = ?record.changes, "delivery applied")
            }
            DeliveryStatus::Rejected => {
                tracing::warn!(problems = record.problems.len() as u64 + record.more_problems, first = ?record.problems.first().map(|p| p.to_string()), "delivery rejected")
            }
            DeliveryStatus::Failed => tracing::error!(error = ?record.error, "delivery failed"),
        }
        Ok(record)
    }

    /// The record, plus `dsync.delivery_rejected` in the same commit when rejected.
    fn commit_record(&self, record: &DeliveryRecord) -> Result<(), DeliveryError> {
        let mut cs = ChangeSet::new();
        cs.put_json(DELIVERIES_TABLE, record_key(record), record)?;
        if record.status == DeliveryStatus::Rejected {
            let data = json!({
                "object": "directory_delivery",
                "id": record.id,
                "directory_id": record.directory_id,
                "organization_id": record.organization_id,
                "source": record.source,
                "files": record.files,
                "problems": record.problems,
                "more_problems": record.more_problems,
                "received_at": record.received_at,
            });
            let event = Event::new(EventKind::DsyncDeliveryRejected, data);
            cs.append_event(&event, Some(&record.organization_id));
        }
        self.engine.store().commit(cs)?;
        Ok(())
    }
}

fn record_key(r: &DeliveryRecord) -> String {
    format!("{}/{}", r.directory_id, r.id)
}

/// The text a rejected uploader reads.
pub fn report_text(r: &DeliveryRecord) -> String {
    let rej = Rejection {
        problems: r.problems.clone(),
        more: r.more_problems,
    };
    format!(
        "delivery {} for directory {} received {}\n{}",
        r.id,
        r.directory_id,
        r.received_at,
        rej.report()
    )
}

/// A directory's deliveries, newest first (at most `limit`, before the delivery id `before`).
pub fn list_deliveries(
    store: &dyn Store,
    dir_id: &str,
    before: Option<&str>,
    limit: usize,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let prefix = format!("{dir_id}/");
    let before_key = before.map(|b| format!("{prefix}{b}"));
    let rows = store.scan_rev(DELIVERIES_TABLE, &prefix, before_key.as_deref(), limit)?;
    rows.into_iter()
        .map(|(k, v)| {
            serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                table: DELIVERIES_TABLE.to_owned(),
                detail: format!("{k}: {e}"),
            })
        })
        .collect()
}

/// Status of a directory's feed: the last delivery, the last applied one and counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryStatusSummary {
    /// The newest delivery of any status.
    pub last_delivery: Option<DeliveryRecord>,
    /// The newest applied delivery.
    pub last_applied: Option<DeliveryRecord>,
    /// Deliveries recorded.
    pub deliveries: u64,
    /// Of which rejected.
    pub rejections: u64,
}

/// Summarizes a directory's deliveries (reads them all; they are small and few).
pub fn summary(store: &dyn Store, dir_id: &str) -> Result<DeliveryStatusSummary, StoreError> {
    let mut out = DeliveryStatusSummary::default();
    let mut before: Option<String> = None;
    loop {
        let page = list_deliveries(store, dir_id, before.as_deref(), 500)?;
        let Some(last) = page.last() else { break };
        before = Some(last.id.clone());
        for r in page {
            out.deliveries += 1;
            if r.status == DeliveryStatus::Rejected {
                out.rejections += 1;
            }
            if out.last_applied.is_none() && r.status == DeliveryStatus::Applied {
                out.last_applied = Some(r.clone());
            }
            if out.last_delivery.is_none() {
                out.last_delivery = Some(r);
            }
        }
    }
    Ok(out)
}

/// The inbox path of `username` under `root` (no validation: usernames are checked at config).
pub fn inbox_of(root: &Path, username: &str) -> PathBuf {
    root.join(username)
}
