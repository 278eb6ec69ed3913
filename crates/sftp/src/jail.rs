//! The inbox jail: maps an SFTP client's path onto a file inside one user's inbox, or refuses.
//!
//! The client sees its inbox as `/`. Paths are checked by name before any file system call:
//! `..` anywhere is refused (no clamping that could hide a traversal attempt), names are a safe
//! character set, and the tree is shallow and fixed: uploads at the root, read-only
//! `archive/<delivery>/<file>` and `rejected/<report>` below it. Every existing component is
//! checked with `lstat` and a symlink anywhere is refused; files are opened with `O_NOFOLLOW`.
//! The server never creates a symlink (SSH_FXP_SYMLINK is refused).

use std::path::{Path, PathBuf};

use crate::delivery::{ARCHIVE_DIR, REJECTED_DIR};

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JailError {
    /// `..`, a forbidden name, or a path outside the allowed tree.
    #[error("path not allowed: {0}")]
    NotAllowed(String),
    /// A symlink was found on the way.
    #[error("symlinks are not allowed")]
    Symlink,
    /// The path does not exist.
    #[error("no such file")]
    NotFound,
}

/// Where a resolved path sits in the inbox tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The inbox itself.
    Root,
    /// A file at the root (uploads; writable).
    Upload,
    /// `archive`, `rejected` or anything below them (read-only).
    ReadOnly,
}

/// A checked path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The real path.
    pub path: PathBuf,
    /// The client's view (`/users.csv`).
    pub virtual_path: String,
    /// Where it is.
    pub place: Place,
}

fn safe_name(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= 255
        && !c.starts_with('.')
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'@'))
}

/// Normalizes a client path to its components (`.` and empty parts dropped).
pub fn components(path: &str) -> Result<Vec<&str>, JailError> {
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(JailError::NotAllowed(path.to_owned())),
            c if safe_name(c) => out.push(c),
            _ => return Err(JailError::NotAllowed(path.to_owned())),
        }
    }
    Ok(out)
}

/// The virtual path of components.
pub fn virtual_path(parts: &[&str]) -> String {
    format!("/{}", parts.join("/"))
}

/// Resolves `path` inside `inbox`. Existing components must not be symlinks; the final one
/// may be missing (a new upload).
pub fn resolve(inbox: &Path, path: &str) -> Result<Resolved, JailError> {
    let parts = components(path)?;
    let place = match parts.as_slice() {
        [] => Place::Root,
        [top, ..] if *top == ARCHIVE_DIR || *top == REJECTED_DIR => {
            // archive/<delivery>/<file>, rejected/<report>
            let max = if *top == ARCHIVE_DIR { 3 } else { 2 };
            if parts.len() > max {
                return Err(JailError::NotAllowed(path.to_owned()));
            }
            Place::ReadOnly
        }
        [_] => Place::Upload,
        _ => return Err(JailError::NotAllowed(path.to_owned())),
    };
    let mut real = inbox.to_path_buf();
    check_not_symlink(&real)?;
    for (i, c) in parts.iter().enumerate() {
        real.push(c);
        match std::fs::symlink_metadata(&real) {
            Ok(m) if m.file_type().is_symlink() => {
                crate::metrics::refused("symlink");
                return Err(JailError::Symlink);
            }
            Ok(_) => {}
            Err(_) if i + 1 == parts.len() => {}
            Err(_) => return Err(JailError::NotFound),
        }
    }
    Ok(Resolved {
        path: real,
        virtual_path: virtual_path(&parts),
        place,
    })
}

fn check_not_symlink(p: &Path) -> Result<(), JailError> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_symlink() => Err(JailError::Symlink),
        Ok(_) => Ok(()),
        Err(_) => Err(JailError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_traversal_and_odd_names() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "../x",
            "/../other/users.csv",
            "a/../../b",
            ".ssh",
            "x\\y",
            "users.csv/..",
            "sub/dir/file",
            "archive/a/b/c",
            "rejected/a/b",
        ] {
            assert!(resolve(dir.path(), bad).is_err(), "{bad} accepted");
        }
        let r = resolve(dir.path(), "/users.csv").unwrap();
        assert_eq!(r.place, Place::Upload);
        assert_eq!(r.path, dir.path().join("users.csv"));
        assert_eq!(resolve(dir.path(), "/").unwrap().place, Place::Root);
        assert_eq!(resolve(dir.path(), ".").unwrap().place, Place::Root);
        // "Absolute" paths are inside the jail: /etc/passwd is <inbox>/etc/passwd, refused
        // because uploads live only at the root.
        assert!(resolve(dir.path(), "/etc/passwd").is_err());
    }

    #[test]
    fn refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("users.csv")).unwrap();
        assert_eq!(
            resolve(dir.path(), "users.csv").unwrap_err(),
            JailError::Symlink
        );
        std::os::unix::fs::symlink("/etc", dir.path().join("archive")).unwrap();
        assert_eq!(
            resolve(dir.path(), "archive/passwd").unwrap_err(),
            JailError::Symlink
        );
    }
}
