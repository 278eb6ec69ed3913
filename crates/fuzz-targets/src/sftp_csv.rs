//! The WorkOS-format CSV reader of SFTP deliveries.

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::PathBuf;

use idbridge_sftp::{ingest, DeliveryFiles, IngestOptions};

/// Separates the three files in one input: `users.csv NUL groups.csv NUL user_groups.csv`.
pub const FILE_SEPARATOR: u8 = 0;

thread_local! {
    /// One scratch directory per thread (in memory when /dev/shm exists), reused by every input.
    static SCRATCH: RefCell<Option<tempfile::TempDir>> = const { RefCell::new(None) };
}

fn scratch_dir() -> PathBuf {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.is_none() {
            let shm = std::path::Path::new("/dev/shm");
            let dir = if shm.is_dir() {
                tempfile::tempdir_in(shm)
            } else {
                tempfile::tempdir()
            };
            *s = Some(dir.unwrap_or_else(|e| panic!("scratch directory: {e}")));
        }
        s.as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default()
    })
}

/// A delivery of one to three files, validated and read. Properties: no panic; an accepted
/// delivery has as many users as `users.csv` has rows, unique user and group ids, and only
/// memberships between users and groups it has.
pub fn sftp_csv(data: &[u8]) {
    let dir = scratch_dir();
    let mut parts = data.splitn(3, |b| *b == FILE_SEPARATOR);
    let write = |name: &str, bytes: Option<&[u8]>| {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        bytes.map(|b| {
            std::fs::write(&path, b).unwrap_or_else(|e| panic!("writing {name}: {e}"));
            path
        })
    };
    let users = write("users.csv", parts.next()).unwrap_or_default();
    let files = DeliveryFiles {
        users,
        groups: write("groups.csv", parts.next()),
        user_groups: write("user_groups.csv", parts.next()),
    };
    let Ok(ingested) = ingest(&files, &IngestOptions::default(), &mut |_| {}) else {
        return;
    };
    let snap = &ingested.snapshot;
    assert_eq!(
        snap.users.len() as u64,
        ingested.rows.users,
        "users vs rows"
    );
    let users: HashSet<&str> = snap.users.iter().map(|u| u.idp_id.as_str()).collect();
    let groups: HashSet<&str> = snap.groups.iter().map(|g| g.idp_id.as_str()).collect();
    assert_eq!(users.len(), snap.users.len(), "duplicate user ids accepted");
    assert_eq!(
        groups.len(),
        snap.groups.len(),
        "duplicate group ids accepted"
    );
    for (g, u) in &snap.memberships {
        assert!(
            groups.contains(g.as_str()) && users.contains(u.as_str()),
            "membership ({g}, {u}) names an unknown user or group"
        );
    }
}
