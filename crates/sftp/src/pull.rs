//! Pull mode: idbridge connects to the customer's SFTP server on a schedule, fetches the
//! delivery files and applies them like an upload.
//!
//! The server's host key is pinned (an OpenSSH public key line or a `SHA256:` fingerprint): any
//! other key ends the connection before authentication with [`PullError::HostKeyMismatch`].
//! Files are downloaded to `<staging>/.<name>.part` with a size cap and renamed into place only
//! when all of them arrived, then processed as one delivery ([`Processor::process_inbox`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh_sftp::client::SftpSession;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::delivery::{DeliveryError, DeliveryRecord, DeliverySource, Processor};
use crate::feed::{DELIVERY_FILES, USERS_FILE};

/// The pinned identity of the customer's server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyPin {
    /// The exact public key.
    Key(PublicKey),
    /// Its SHA-256 fingerprint as `ssh-keygen -l` prints it (`SHA256:...`).
    Fingerprint(String),
}

impl HostKeyPin {
    /// Parses `ssh-ed25519 AAAA…` or `SHA256:…`.
    pub fn parse(s: &str) -> Result<Self, PullError> {
        let s = s.trim();
        if s.starts_with("SHA256:") {
            return Ok(HostKeyPin::Fingerprint(s.to_owned()));
        }
        PublicKey::from_openssh(s)
            .map(HostKeyPin::Key)
            .map_err(|e| PullError::Config(format!("host key pin: {e}")))
    }

    fn matches(&self, key: &PublicKey) -> bool {
        match self {
            HostKeyPin::Key(k) => k.key_data() == key.key_data(),
            HostKeyPin::Fingerprint(f) => key.fingerprint(HashAlg::Sha256).to_string() == *f,
        }
    }
}

/// Where and how to pull from.
#[derive(Debug, Clone)]
pub struct PullConfig {
    /// The directory fed.
    pub directory_id: String,
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Login.
    pub username: String,
    /// Our private key (OpenSSH format).
    pub private_key: Arc<PrivateKey>,
    /// The server's pinned key.
    pub host_key: HostKeyPin,
    /// Remote folder holding `users.csv` etc.
    pub remote_dir: String,
    /// Local staging folder (also holds `archive/` and `rejected/`).
    pub staging_dir: PathBuf,
    /// Largest file fetched.
    pub max_file_bytes: u64,
    /// Connect + authenticate + transfer timeout.
    pub timeout: Duration,
    /// Delete the remote files after a successful fetch.
    pub remove_remote: bool,
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The server presented another host key than the pinned one.
    #[error("host key mismatch for {host}: the server presented {presented}, which is not the pinned key; refusing to connect")]
    HostKeyMismatch {
        /// `host:port`.
        host: String,
        /// The presented key's SHA-256 fingerprint.
        presented: String,
    },
    /// Our key was not accepted.
    #[error("authentication as {0} refused by the server")]
    AuthRefused(String),
    /// Bad settings.
    #[error("configuration: {0}")]
    Config(String),
    /// SSH transport.
    #[error("ssh: {0}")]
    Ssh(String),
    /// SFTP operation.
    #[error("sftp {what}: {detail}")]
    Sftp {
        /// Operation.
        what: String,
        /// Error.
        detail: String,
    },
    /// A remote file is larger than the cap.
    #[error("{file} is larger than {max} bytes")]
    TooLarge {
        /// File name.
        file: String,
        /// The cap.
        max: u64,
    },
    /// Local file system.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The whole pull took too long.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Processing the fetched delivery failed.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
}

struct PinnedHost {
    pin: HostKeyPin,
    addr: String,
    /// The presented fingerprint when it did not match (read after the connect fails).
    mismatch: Arc<Mutex<Option<String>>>,
}

impl client::Handler for PinnedHost {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let (ok, fp) = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => (
                self.pin.matches(key),
                key.fingerprint(HashAlg::Sha256).to_string(),
            ),
            // A certificate is not the pinned key: refuse.
            russh::keys::PublicKeyOrCertificate::Certificate(c) => (
                false,
                c.public_key().fingerprint(HashAlg::Sha256).to_string(),
            ),
        };
        if !ok {
            tracing::error!(host = %self.addr, presented = %fp, "SFTP pull: host key mismatch");
            if let Ok(mut m) = self.mismatch.lock() {
                *m = Some(fp);
            }
        }
        Ok(ok)
    }
}

/// Fetches the delivery files into the staging folder. Returns the names fetched (empty when
/// the remote folder has no `users.csv`).
pub async fn fetch(cfg: &PullConfig) -> Result<Vec<String>, PullError> {
    tokio::time::timeout(cfg.timeout, fetch_inner(cfg))
        .await
        .map_err(|_| PullError::Timeout(cfg.timeout))?
}

async fn fetch_inner(cfg: &PullConfig) -> Result<Vec<String>, PullError> {
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let mismatch = Arc::new(Mutex::new(None));
    let handler = PinnedHost {
        pin: cfg.host_key.clone(),
        addr: addr.clone(),
        mismatch: mismatch.clone(),
    };
    let config = Arc::new(client::Config {
        inactivity_timeout: Some(cfg.timeout),
        ..Default::default()
    });
    let mut session = match client::connect(config, (cfg.host.as_str(), cfg.port), handler).await {
        Ok(s) => s,
        Err(e) => {
            let presented = mismatch.lock().ok().and_then(|m| m.clone());
            return Err(match presented {
                Some(presented) => PullError::HostKeyMismatch {
                    host: addr,
                    presented,
                },
                None => PullError::Ssh(e.to_string()),
            });
        }
    };
    let hash = session
        .best_supported_rsa_hash()
        .await
        .map_err(|e| PullError::Ssh(e.to_string()))?
        .flatten();
    let auth = session
        .authenticate_publickey(
            cfg.username.clone(),
            PrivateKeyWithHashAlg::new(cfg.private_key.clone(), hash),
        )
        .await
        .map_err(|e| PullError::Ssh(e.to_string()))?;
    if !auth.success() {
        return Err(PullError::AuthRefused(cfg.username.clone()));
    }
    let channel = session
        .channel_open_session()
        .await
        .map_err(|e| PullError::Ssh(e.to_string()))?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| PullError::Ssh(e.to_string()))?;
    let sftp = SftpSession::new(channel.into_stream())
        .await
        .map_err(|e| sftp_err("start", e))?;
    let fetched = download_all(cfg, &sftp).await;
    let _ = sftp.close().await;
    let _ = session
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
    fetched
}

fn sftp_err(what: &str, e: impl std::fmt::Display) -> PullError {
    PullError::Sftp {
        what: what.to_owned(),
        detail: e.to_string(),
    }
}

fn local_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PullError {
    let what = what.into();
    move |source| PullError::Io { what, source }
}

async fn download_all(cfg: &PullConfig, sftp: &SftpSession) -> Result<Vec<String>, PullError> {
    let remote = |name: &str| format!("{}/{}", cfg.remote_dir.trim_end_matches('/'), name);
    if !sftp
        .try_exists(remote(USERS_FILE))
        .await
        .map_err(|e| sftp_err("stat", e))?
    {
        return Ok(Vec::new());
    }
    tokio::fs::create_dir_all(&cfg.staging_dir)
        .await
        .map_err(local_err("creating the staging folder"))?;
    let mut fetched = Vec::new();
    for name in DELIVERY_FILES {
        let path = remote(name);
        if name != USERS_FILE && !sftp.try_exists(&path).await.unwrap_or(false) {
            continue;
        }
        let part = cfg.staging_dir.join(format!(".{name}.part"));
        download(sftp, &path, &part, name, cfg.max_file_bytes).await?;
        fetched.push(name.to_owned());
    }
    // All arrived: move into place together.
    for name in &fetched {
        let part = cfg.staging_dir.join(format!(".{name}.part"));
        tokio::fs::rename(&part, cfg.staging_dir.join(name))
            .await
            .map_err(local_err(format!("placing {name}")))?;
    }
    if cfg.remove_remote {
        for name in &fetched {
            if let Err(e) = sftp.remove_file(remote(name)).await {
                tracing::warn!(file = %name, error = %e, "could not remove the fetched remote file");
            }
        }
    }
    Ok(fetched)
}

async fn download(
    sftp: &SftpSession,
    remote: &str,
    local: &Path,
    name: &str,
    max: u64,
) -> Result<(), PullError> {
    let mut src = sftp.open(remote).await.map_err(|e| sftp_err("open", e))?;
    let mut dst = tokio::fs::File::create(local)
        .await
        .map_err(local_err(format!("creating {}", local.display())))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = src.read(&mut buf).await.map_err(|e| sftp_err("read", e))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > max {
            drop(dst);
            let _ = tokio::fs::remove_file(local).await;
            return Err(PullError::TooLarge {
                file: name.to_owned(),
                max,
            });
        }
        dst.write_all(&buf[..n])
            .await
            .map_err(local_err(format!("writing {}", local.display())))?;
    }
    dst.flush()
        .await
        .map_err(local_err(format!("writing {}", local.display())))?;
    Ok(())
}

/// One pull run: fetch, then process what arrived as one delivery. `None` when there was
/// nothing to fetch.
pub async fn pull_once(
    cfg: &PullConfig,
    processor: &Processor,
) -> Result<Option<DeliveryRecord>, PullError> {
    let span = tracing::info_span!("sftp.pull", directory_id = %cfg.directory_id, host = %cfg.host);
    let _e = span.enter();
    drop(_e);
    let fetched = {
        use tracing::Instrument;
        fetch(cfg).instrument(span.clone()).await?
    };
    if fetched.is_empty() {
        tracing::debug!(parent: &span, "nothing to pull");
        return Ok(None);
    }
    let (p, dir, staging) = (
        processor.clone(),
        cfg.directory_id.clone(),
        cfg.staging_dir.clone(),
    );
    let record =
        tokio::task::spawn_blocking(move || p.process_inbox(&dir, &staging, DeliverySource::Pull))
            .await
            .map_err(|e| PullError::Config(format!("delivery task: {e}")))??;
    Ok(record)
}

/// Pulls every `interval` until the task is dropped or aborted; errors are logged (and the
/// host key mismatch loudly) and retried at the next tick.
pub async fn run_schedule(cfg: PullConfig, processor: Processor, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match pull_once(&cfg, &processor).await {
            Ok(Some(r)) => {
                tracing::info!(directory_id = %cfg.directory_id, delivery = %r.id, status = ?r.status, "pulled a delivery")
            }
            Ok(None) => {}
            Err(e) => {
                metrics::counter!("idbridge_sftp_pull_errors_total", "directory_id" => cfg.directory_id.clone())
                    .increment(1);
                tracing::error!(directory_id = %cfg.directory_id, error = %e, "SFTP pull failed");
            }
        }
    }
}

/// Loads our client key (OpenSSH private key file, unencrypted).
pub fn load_private_key(path: &Path) -> Result<PrivateKey, PullError> {
    russh::keys::load_secret_key(path, None)
        .map_err(|e| PullError::Config(format!("private key {}: {e}", path.display())))
}

/// Parses our client key given as text (OpenSSH private key, unencrypted): the admin API's
/// `pull.private_key`, stored sealed.
pub fn parse_private_key(text: &str) -> Result<PrivateKey, PullError> {
    russh::keys::decode_secret_key(text, None)
        .map_err(|e| PullError::Config(format!("private key: {e}")))
}
