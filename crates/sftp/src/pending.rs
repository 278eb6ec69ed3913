//! A delivery the mass-deletion guard stopped, reviewed and confirmed by an admin while the
//! server runs (no need to stop it, fetch the archive and re-import).
//!
//! The pending deletion of a directory is its NEWEST delivery when the guard stopped it (a
//! later delivery, applied or not, supersedes it). [`pending`] lists what it would remove:
//! the count and the first users (by id and email), computed from its archived `users.csv`
//! against the directory now. [`confirm`] applies those same files once, past the guard.

use std::collections::HashSet;
use std::path::Path;

use idbridge_directory::{Cursor, Order, PageRequest};
use idbridge_model::Timestamp;
use serde::{Deserialize, Serialize};

use crate::delivery::{
    list_deliveries, DeliveryError, DeliveryRecord, DeliverySource, DeliveryStatus, Processor,
};
use crate::feed::DeliveryFiles;

/// One user a pending deletion would remove (or deactivate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeavingUser {
    /// `directory_user_...`.
    pub id: String,
    /// The source's id.
    pub idp_id: String,
    /// Primary email.
    pub email: Option<String>,
}

/// A stopped delivery waiting for an admin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingDeletion {
    /// The directory.
    pub directory_id: String,
    /// The stopped delivery.
    pub delivery_id: String,
    /// When it arrived.
    pub at: Timestamp,
    /// Users it would remove.
    pub would_delete: u64,
    /// Users in the directory.
    pub total: u64,
    /// The directory's ratio.
    pub threshold: f64,
    /// The first `limit` of them.
    pub sample: Vec<LeavingUser>,
}

/// The newest delivery of a directory, when the guard stopped it and its files are still there.
fn stopped(
    p: &Processor,
    dir_id: &str,
) -> Result<Option<(DeliveryRecord, DeliveryFiles)>, DeliveryError> {
    let store = p.engine().store().clone();
    let newest = list_deliveries(store.as_ref(), dir_id, None, 1)?;
    let Some(rec) = newest.into_iter().next() else {
        return Ok(None);
    };
    if rec.status != DeliveryStatus::Rejected {
        return Ok(None);
    }
    let Some(files) = rec
        .guard
        .as_ref()
        .and_then(|g| g.files_dir.as_deref())
        .and_then(DeliveryFiles::in_dir)
    else {
        return Ok(None);
    };
    Ok(Some((rec, files)))
}

/// The `user_id`s of a `users.csv` (the file already passed validation once).
fn user_ids(users_csv: &Path) -> Result<HashSet<String>, DeliveryError> {
    let io = |e: csv::Error| DeliveryError::Io {
        what: format!("reading {}", users_csv.display()),
        source: std::io::Error::other(e.to_string()),
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(users_csv)
        .map_err(io)?;
    let column = reader
        .headers()
        .map_err(io)?
        .iter()
        .position(|h| h.trim().trim_start_matches('\u{feff}') == "user_id");
    let mut ids = HashSet::new();
    let Some(column) = column else {
        return Ok(ids);
    };
    for row in reader.records() {
        if let Some(id) = row.map_err(io)?.get(column) {
            ids.insert(id.trim().to_owned());
        }
    }
    Ok(ids)
}

/// The directory's pending deletion, with the first `limit` users it would remove.
pub fn pending(
    p: &Processor,
    dir_id: &str,
    limit: usize,
) -> Result<Option<PendingDeletion>, DeliveryError> {
    let Some((rec, files)) = stopped(p, dir_id)? else {
        return Ok(None);
    };
    let keep = user_ids(&files.users)?;
    let mut sample = Vec::new();
    let mut cursor = Cursor::None;
    'pages: loop {
        let page = p.engine().list_users(
            dir_id,
            None,
            &PageRequest {
                limit: 100,
                order: Order::Asc,
                cursor,
            },
        )?;
        for u in &page.data {
            if !keep.contains(&u.user.idp_id) {
                if sample.len() == limit {
                    break 'pages;
                }
                sample.push(LeavingUser {
                    id: u.user.id.clone(),
                    idp_id: u.user.idp_id.clone(),
                    email: u.user.email.clone(),
                });
            }
        }
        match page.after {
            Some(a) => cursor = Cursor::After(a),
            None => break,
        }
    }
    let g = rec.guard.as_ref();
    Ok(Some(PendingDeletion {
        directory_id: dir_id.to_owned(),
        delivery_id: rec.id.clone(),
        at: rec.received_at,
        would_delete: g.map(|g| g.would_delete).unwrap_or_default(),
        total: g.map(|g| g.total).unwrap_or_default(),
        threshold: g.map(|g| g.threshold).unwrap_or_default(),
        sample,
    }))
}

/// Applies the pending delivery's files once, past the guard (a new delivery record, source
/// `import`). `None` when nothing is pending.
pub fn confirm(p: &Processor, dir_id: &str) -> Result<Option<DeliveryRecord>, DeliveryError> {
    let Some((rec, files)) = stopped(p, dir_id)? else {
        return Ok(None);
    };
    tracing::warn!(directory_id = dir_id, delivery_id = %rec.id, "admin confirmed a guarded sftp deletion");
    let mut confirmed = p.clone();
    confirmed.policy.confirmed = true;
    confirmed
        .process_files(dir_id, &files, DeliverySource::Import, &mut |_| {})
        .map(Some)
}
