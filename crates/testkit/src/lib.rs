//! Real third-party peers for the test suites (OpenLDAP slapd, Samba AD DC, OpenSSH sshd, PostgreSQL), shared by the crates' own tests and the
//! end-to-end crate so each peer is started one way only. A peer binary that is missing is an
//! error naming the install script, never a silent skip.

pub mod postgres;
pub mod samba;
pub mod slapd;
pub mod sshd;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub use postgres::Postgres;
pub use samba::SambaDc;
pub use slapd::{Slapd, SlapdTls, SyncProv};
pub use sshd::Sshd;

/// Why a peer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The binary is not installed.
    #[error("`{bin}` not found: {hint}")]
    Missing {
        /// The binary looked for.
        bin: String,
        /// How to install it.
        hint: &'static str,
    },
    /// Running the peer or one of its tools failed.
    #[error("{0}")]
    Failed(String),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

impl PeerError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PeerError {
        let what = what.into();
        move |source| PeerError::Io { what, source }
    }
}

/// The path of an installed system binary (`/usr/sbin/slapd`, `/usr/bin/ldapsearch`, ...).
pub fn find_bin(bin: &str, hint: &'static str) -> Result<PathBuf, PeerError> {
    [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ]
    .iter()
    .map(|dir| Path::new(dir).join(bin))
    .find(|p| p.exists())
    .ok_or_else(|| PeerError::Missing {
        bin: bin.to_owned(),
        hint,
    })
}

/// Applies LDIF with the real `ldapmodify` (`-a` when `add`: entries without a changetype are
/// adds), simple bind as `bind_dn`.
pub fn ldapmodify(
    ldapmodify: &Path,
    url: &str,
    bind_dn: &str,
    password: &str,
    ldif: &str,
    add: bool,
) -> Result<(), PeerError> {
    let mut cmd = Command::new(ldapmodify);
    cmd.args(["-x", "-H", url, "-D", bind_dn, "-w", password]);
    if add {
        cmd.arg("-a");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(PeerError::io("ldapmodify"))?;
    // Written from another thread while the output is read: a big LDIF makes ldapmodify
    // print more than a pipe holds before it has read all its input.
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| PeerError::Failed("ldapmodify: no stdin".into()))?;
    let input = ldif.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(PeerError::io("ldapmodify"))?;
    if !out.status.success() {
        return Err(PeerError::Failed(format!(
            "ldapmodify -H {url} failed: {}\n{ldif}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    writer
        .join()
        .map_err(|_| PeerError::Failed("ldapmodify: the stdin writer panicked".into()))?
        .map_err(PeerError::io("ldapmodify stdin"))?;
    Ok(())
}
