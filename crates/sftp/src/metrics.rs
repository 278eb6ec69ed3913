//! Prometheus metrics of the SFTP feed (exported by the server's recorder, if installed).

use crate::delivery::{DeliveryRecord, DeliveryStatus};

/// Counts a processed delivery, its rows and its changes, per directory and status.
pub(crate) fn delivery(r: &DeliveryRecord) {
    let status = match r.status {
        DeliveryStatus::Applied => "applied",
        DeliveryStatus::Rejected => "rejected",
        DeliveryStatus::Failed => "failed",
    };
    let dir = r.directory_id.clone();
    metrics::counter!("idbridge_sftp_deliveries_total", "directory_id" => dir.clone(), "status" => status)
        .increment(1);
    metrics::counter!("idbridge_sftp_rows_total", "directory_id" => dir.clone())
        .increment(r.rows.users + r.rows.groups + r.rows.user_groups);
    if let Some(c) = &r.changes {
        metrics::counter!("idbridge_sftp_changes_total", "directory_id" => dir.clone()).increment(
            c.users_created
                + c.users_updated
                + c.users_deleted
                + c.groups_created
                + c.groups_updated
                + c.groups_deleted
                + c.memberships_added
                + c.memberships_removed,
        );
    }
    metrics::histogram!("idbridge_sftp_delivery_seconds", "directory_id" => dir)
        .record(r.duration_ms as f64 / 1000.0);
}

/// Counts a refused SFTP login or file operation (why: `auth`, `path`, `quota`, `symlink`).
pub(crate) fn refused(why: &'static str) {
    metrics::counter!("idbridge_sftp_refused_total", "reason" => why).increment(1);
}
