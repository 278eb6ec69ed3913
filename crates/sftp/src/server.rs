//! The embedded SFTP server (push mode).
//!
//! One port for all SFTP directories; each directory has its own username and authorized
//! public keys (ED25519, ECDSA, RSA ≥ 2048 bits; passwords are never accepted) and sees only its
//! inbox (see [`crate::jail`]). Quotas bound each file's size and the number of files at the
//! inbox root. A delivery is processed when its upload completes: after the last write handle
//! of the user closes, the server waits `debounce` with no new upload activity, then claims
//! `users.csv` (+ `groups.csv`, `user_groups.csv`) under the user's upload lock and applies them
//! as one snapshot.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idbridge_limits::{FailureLimit, FailureLimiter};
use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};
use russh::keys::ssh_key::{LineEnding, PublicKey};
use russh::keys::{Algorithm, HashAlg, PrivateKey};
use russh::server::{Auth, Msg, PublicKeyOffer, Server as _, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use tokio::net::TcpListener;

use crate::delivery::{DeliverySource, Processor};
use crate::jail::{self, JailError, Place};
use idbridge_directory::SnapshotPolicy;

/// Errors starting the server or reading its keys.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// File system or socket error.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A key could not be parsed or is not allowed.
    #[error("{0}")]
    Key(String),
    /// Two directories with one username, or a bad username.
    #[error("configuration: {0}")]
    Config(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let what = what.into();
    move |source| ServerError::Io { what, source }
}

/// Parses one `authorized_keys`-style line (`ssh-ed25519 AAAA… comment`) and enforces the key
/// policy: ED25519, ECDSA (P-256/384/521), or RSA of at least 2048 bits.
pub fn parse_authorized_key(line: &str) -> Result<PublicKey, ServerError> {
    let key = PublicKey::from_openssh(line.trim())
        .map_err(|e| ServerError::Key(format!("unreadable public key: {e}")))?;
    match key.algorithm() {
        Algorithm::Ed25519 | Algorithm::Ecdsa { .. } => Ok(key),
        Algorithm::Rsa { .. } => {
            let bits = key
                .key_data()
                .rsa()
                .map(|r| {
                    let n = r.n().as_positive_bytes().unwrap_or(&[]);
                    n.len() * 8 - n.first().map_or(0, |b| b.leading_zeros() as usize)
                })
                .unwrap_or(0);
            if bits >= 2048 {
                Ok(key)
            } else {
                Err(ServerError::Key(format!(
                    "RSA key of {bits} bits refused: at least 2048 are required"
                )))
            }
        }
        other => Err(ServerError::Key(format!(
            "key type {other} refused: use ED25519, ECDSA or RSA >= 2048"
        ))),
    }
}

/// Loads the server's host key from `path`, or generates an ED25519 key there (mode 0600) on
/// first start, so clients' `known_hosts` entries stay valid across restarts.
pub fn load_or_create_host_key(path: &Path) -> Result<PrivateKey, ServerError> {
    match std::fs::read_to_string(path) {
        Ok(pem) => PrivateKey::from_openssh(pem.as_bytes())
            .map_err(|e| ServerError::Key(format!("host key {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
            let pair = Ed25519Keypair::from_seed(&seed);
            let key = PrivateKey::new(KeypairData::Ed25519(pair), "idbridge sftp host key")
                .map_err(|e| ServerError::Key(format!("generating the host key: {e}")))?;
            let pem = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| ServerError::Key(format!("encoding the host key: {e}")))?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io_err("creating the key folder"))?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io_err(format!("writing {}", path.display())))?;
            std::io::Write::write_all(&mut f, pem.as_bytes())
                .map_err(io_err(format!("writing {}", path.display())))?;
            tracing::info!(path = %path.display(), fingerprint = %key.fingerprint(HashAlg::Sha256), "generated the SFTP host key");
            Ok(key)
        }
        Err(e) => Err(ServerError::Io {
            what: format!("reading {}", path.display()),
            source: e,
        }),
    }
}

/// One SFTP directory's account.
#[derive(Debug, Clone)]
pub struct SftpAccount {
    /// Login name (also the inbox folder name).
    pub username: String,
    /// The directory its deliveries feed.
    pub directory_id: String,
    /// Authorized keys.
    pub keys: Vec<PublicKey>,
    /// This directory's mass-deletion guard (`None`: the processor's).
    pub policy: Option<SnapshotPolicy>,
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen (default port 2222).
    pub listen: SocketAddr,
    /// Host key file (generated when missing).
    pub host_key_path: PathBuf,
    /// Folder holding one inbox per username.
    pub inbox_root: PathBuf,
    /// Largest file an uploader may write.
    pub max_file_bytes: u64,
    /// Most files (not folders) at an inbox root.
    pub max_files: usize,
    /// Quiet time after the last upload closes before a delivery is processed.
    pub debounce: Duration,
    /// Accounts.
    pub accounts: Vec<SftpAccount>,
    /// Open connections at most; over it a new connection is closed at once.
    pub max_connections: usize,
    /// Open connections from one client address at most.
    pub max_connections_per_ip: usize,
    /// Refused keys per account (username) in a window; past it the account refuses every
    /// key, even a right one, until the window passes.
    pub failed_auth_limit: FailureLimit,
}

impl ServerConfig {
    /// Defaults under `data_dir`: port 2222, 512 MiB files, 20 files, 2 s debounce.
    pub fn new(data_dir: &Path) -> Self {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 2222)),
            host_key_path: data_dir.join("sftp").join("ssh_host_ed25519_key"),
            inbox_root: data_dir.join("sftp").join("inbox"),
            max_file_bytes: 512 * 1024 * 1024,
            max_files: 20,
            debounce: Duration::from_secs(2),
            accounts: Vec::new(),
            max_connections: 64,
            max_connections_per_ip: 16,
            failed_auth_limit: FailureLimit {
                max_failures: 30,
                window_secs: 300,
            },
        }
    }
}

/// Upload activity of one account: open write handles and a counter bumped on each close,
/// guarded by one lock that the delivery claim also takes.
#[derive(Debug, Default)]
struct Activity {
    open_writers: usize,
    generation: u64,
}

struct Account {
    directory_id: String,
    /// Replaced live by [`RunningSftpServer::set_accounts`]: a removed key is refused at the
    /// next login.
    keys: Mutex<Vec<PublicKey>>,
    policy: Mutex<Option<SnapshotPolicy>>,
    inbox: PathBuf,
    activity: Mutex<Activity>,
    /// One delivery at a time per account.
    processing: tokio::sync::Mutex<()>,
}

struct Shared {
    /// Username → account; replaced live by [`RunningSftpServer::set_accounts`].
    accounts: Mutex<HashMap<String, Arc<Account>>>,
    inbox_root: PathBuf,
    failed_auth: FailureLimiter,
    processor: Processor,
    max_file_bytes: u64,
    max_files: usize,
    debounce: Duration,
}

/// A running server.
pub struct RunningSftpServer {
    /// The bound address (useful with port 0).
    pub local_addr: SocketAddr,
    /// The host key's public half.
    pub host_key: PublicKey,
    shutdown: tokio::sync::broadcast::Sender<String>,
    task: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
}

impl RunningSftpServer {
    /// Stops accepting and disconnects clients.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send("server shutting down".into());
        let _ = self.task.await;
    }

    /// Replaces the accounts while the server runs: new accounts can log in at once, removed
    /// ones and removed keys are refused at the next login, and a session already open with one
    /// is refused at its next request (its unfinished uploads removed), and
    /// an account whose directory is unchanged keeps its upload state. All or nothing: a bad
    /// account changes nothing.
    pub fn set_accounts(&self, accounts: Vec<SftpAccount>) -> Result<(), ServerError> {
        let fresh = build_accounts(&self.shared.inbox_root, accounts)?;
        let mut added = Vec::new();
        {
            let mut current = lock(&self.shared.accounts);
            let mut next = HashMap::new();
            for (name, acc) in fresh {
                match current.remove(&name) {
                    Some(old) if old.directory_id == acc.directory_id => {
                        *lock(&old.keys) = std::mem::take(&mut *lock(&acc.keys));
                        *lock(&old.policy) = *lock(&acc.policy);
                        next.insert(name, old);
                    }
                    _ => {
                        added.push(acc.clone());
                        next.insert(name, acc);
                    }
                }
            }
            *current = next;
        }
        // Deliveries already waiting in a new account's inbox.
        for acc in added {
            schedule(self.shared.clone(), acc, Duration::ZERO);
        }
        Ok(())
    }
}

/// Checks usernames and creates the inboxes.
fn build_accounts(
    inbox_root: &Path,
    list: Vec<SftpAccount>,
) -> Result<HashMap<String, Arc<Account>>, ServerError> {
    let mut accounts = HashMap::new();
    for a in list {
        if jail::components(&a.username)
            .map(|c| c.len() != 1)
            .unwrap_or(true)
        {
            return Err(ServerError::Config(format!(
                "username {:?}: letters, digits, . _ - + @ only",
                a.username
            )));
        }
        let inbox = inbox_root.join(&a.username);
        std::fs::create_dir_all(&inbox).map_err(io_err(format!("creating {}", inbox.display())))?;
        let acc = Arc::new(Account {
            directory_id: a.directory_id,
            keys: Mutex::new(a.keys),
            policy: Mutex::new(a.policy),
            inbox,
            activity: Mutex::new(Activity::default()),
            processing: tokio::sync::Mutex::new(()),
        });
        if accounts.insert(a.username.clone(), acc).is_some() {
            return Err(ServerError::Config(format!(
                "username {:?} is used twice",
                a.username
            )));
        }
    }
    Ok(accounts)
}

/// Starts the server: binds, loads or creates the host key, creates the inboxes.
pub async fn start(
    cfg: ServerConfig,
    processor: Processor,
) -> Result<RunningSftpServer, ServerError> {
    let key = load_or_create_host_key(&cfg.host_key_path)?;
    let host_key = key.public_key().clone();
    let accounts = build_accounts(&cfg.inbox_root, cfg.accounts)?;
    let shared = Arc::new(Shared {
        accounts: Mutex::new(accounts),
        inbox_root: cfg.inbox_root.clone(),
        failed_auth: FailureLimiter::new(cfg.failed_auth_limit),
        processor,
        max_file_bytes: cfg.max_file_bytes,
        max_files: cfg.max_files,
        debounce: cfg.debounce,
    });
    // Deliveries left from before a restart (uploaded, never processed).
    let waiting: Vec<_> = lock(&shared.accounts).values().cloned().collect();
    for acc in waiting {
        schedule(shared.clone(), acc, Duration::ZERO);
    }
    let config = russh::server::Config {
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        auth_rejection_time: Duration::from_millis(500),
        auth_rejection_time_initial: Some(Duration::ZERO),
        max_auth_attempts: 6,
        inactivity_timeout: Some(Duration::from_secs(600)),
        keys: vec![key],
        ..Default::default()
    };
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(io_err(format!("binding {}", cfg.listen)))?;
    let local_addr = listener.local_addr().map_err(io_err("local address"))?;
    let (shutdown, _) = tokio::sync::broadcast::channel(1);
    let connections = ConnectionCounter::new(cfg.max_connections, cfg.max_connections_per_ip);
    let task = tokio::spawn(accept_loop(
        listener,
        Arc::new(config),
        SshServer {
            shared: shared.clone(),
        },
        connections,
        shutdown.clone(),
    ));
    tracing::info!(%local_addr, "SFTP server listening");
    Ok(RunningSftpServer {
        local_addr,
        host_key,
        shutdown,
        task,
        shared,
    })
}

/// Open connections, in total and per client address.
struct ConnectionCounter {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping it gives its slot back.
struct ConnectionSlot {
    counter: Arc<ConnectionCounter>,
    ip: IpAddr,
}

impl ConnectionCounter {
    fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(ConnectionCounter {
            max_total,
            max_per_ip,
            open: Mutex::default(),
        })
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let mut open = lock(&self.open);
        let (total, per_ip) = &mut *open;
        let from_ip = per_ip.entry(ip).or_insert(0);
        if *total >= self.max_total || *from_ip >= self.max_per_ip {
            if *from_ip == 0 {
                per_ip.remove(&ip);
            }
            return None;
        }
        *from_ip += 1;
        *total += 1;
        Some(ConnectionSlot {
            counter: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.counter.open);
        let (total, per_ip) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// russh's accept loop (`Server::run_on_socket`) with connection limits: a connection over
/// them is closed before the SSH handshake; each admitted one holds its slot until it ends.
async fn accept_loop(
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    mut server: SshServer,
    connections: Arc<ConnectionCounter>,
    shutdown: tokio::sync::broadcast::Sender<String>,
) {
    let mut stop = shutdown.subscribe();
    loop {
        let (socket, peer) = tokio::select! {
            _ = stop.recv() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "SFTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(slot) = connections.admit(peer.ip()) else {
            tracing::info!(%peer, "SFTP connection refused: connection limit");
            crate::metrics::refused("connection_limit");
            continue; // dropping the socket closes it
        };
        let _ = socket.set_nodelay(true);
        let handler = server.new_client(Some(peer));
        let config = config.clone();
        let mut stop = shutdown.subscribe();
        tokio::spawn(async move {
            let _slot = slot;
            let session = match russh::server::run_stream(config, socket, handler).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "SFTP connection setup failed");
                    return;
                }
            };
            let handle = session.handle();
            tokio::select! {
                reason = stop.recv() => {
                    let reason = reason.unwrap_or_default();
                    let _ = handle
                        .disconnect(russh::Disconnect::ByApplication, reason, String::new())
                        .await;
                }
                result = session => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "SFTP connection closed with an error");
                    }
                }
            }
        });
    }
}

/// Processes the account's delivery after `delay` if no upload happened meanwhile.
fn schedule(shared: Arc<Shared>, acc: Arc<Account>, delay: Duration) {
    let gen = lock(&acc.activity).generation;
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _one = acc.processing.lock().await;
        let claimed = {
            let act = lock(&acc.activity);
            if act.open_writers > 0 || act.generation != gen {
                return; // a newer close schedules its own run
            }
            // Renames only, under the lock: no upload can start into a claimed file.
            Processor::claim(&acc.inbox)
        };
        let claimed = match claimed {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(directory_id = %acc.directory_id, error = %e, "claiming a delivery failed");
                return;
            }
        };
        let (mut p, a) = (shared.processor.clone(), acc.clone());
        if let Some(policy) = *lock(&acc.policy) {
            p.policy = policy;
        }
        let res = tokio::task::spawn_blocking(move || {
            p.process_claimed(&a.directory_id, &a.inbox, claimed, DeliverySource::Push)
        })
        .await;
        match res {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(directory_id = %acc.directory_id, error = %e, "delivery failed")
            }
            Err(e) => {
                tracing::error!(directory_id = %acc.directory_id, error = %e, "delivery task panicked")
            }
        }
    });
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct SshServer {
    shared: Arc<Shared>,
}

impl russh::server::Server for SshServer {
    type Handler = SshSession;

    fn new_client(&mut self, peer: Option<SocketAddr>) -> SshSession {
        SshSession {
            shared: self.shared.clone(),
            peer,
            account: None,
            key: None,
            username: String::new(),
            channels: HashMap::new(),
        }
    }
}

struct SshSession {
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    account: Option<Arc<Account>>,
    /// The key this session logged in with (re-checked at every SFTP request).
    key: Option<PublicKey>,
    username: String,
    channels: HashMap<ChannelId, Channel<Msg>>,
}

impl SshSession {
    fn key_allowed(&self, user: &str, key: &PublicKey) -> bool {
        lock(&self.shared.accounts)
            .get(user)
            .is_some_and(|a| lock(&a.keys).iter().any(|k| k.key_data() == key.key_data()))
    }
}

impl russh::server::Handler for SshSession {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, _password: &str) -> Result<Auth, Self::Error> {
        tracing::info!(user, peer = ?self.peer, "SFTP password login refused");
        crate::metrics::refused("auth");
        Ok(Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
            partial_success: false,
        })
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if let Err(wait) = self.shared.failed_auth.check(user) {
            tracing::info!(user, peer = ?self.peer, retry_after = wait.secs(), "SFTP account locked: too many refused keys");
            crate::metrics::refused("auth_locked");
            return Ok(Auth::reject());
        }
        if self.key_allowed(user, offer.public_key) {
            Ok(Auth::Accept)
        } else {
            self.shared.failed_auth.failed(user);
            Ok(Auth::reject())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.shared.failed_auth.check(user).is_err() {
            crate::metrics::refused("auth_locked");
            return Ok(Auth::reject());
        }
        if self.key_allowed(user, key.public_key) {
            self.account = lock(&self.shared.accounts).get(user).cloned();
            self.key = Some(key.public_key.clone());
            self.username = user.to_owned();
            tracing::info!(user, peer = ?self.peer, key = %key.public_key.fingerprint(HashAlg::Sha256), "SFTP login");
            Ok(Auth::Accept)
        } else {
            tracing::info!(user, peer = ?self.peer, "SFTP key refused");
            crate::metrics::refused("auth");
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.account.is_some() && self.channels.len() < 4 {
            self.channels.insert(channel.id(), channel);
            reply.accept().await;
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.close(channel)?;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel_id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(acc), Some(key), "sftp") = (self.account.clone(), self.key.clone(), name) else {
            session.channel_failure(channel_id)?;
            return Ok(());
        };
        let Some(channel) = self.channels.remove(&channel_id) else {
            session.channel_failure(channel_id)?;
            return Ok(());
        };
        session.channel_success(channel_id)?;
        let sftp = SftpSession {
            shared: self.shared.clone(),
            account: acc,
            key,
            user: self.username.clone(),
            handles: HashMap::new(),
            next_handle: 0,
            version: None,
        };
        russh_sftp::server::run(channel.into_stream(), sftp).await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }
}

enum OpenHandle {
    File {
        file: std::fs::File,
        writable: bool,
        /// Where it is (an upload cut off by a dropped connection is removed).
        path: PathBuf,
    },
    Dir {
        path: PathBuf,
        done: bool,
    },
}

struct SftpSession {
    shared: Arc<Shared>,
    account: Arc<Account>,
    /// The key the session logged in with: when an admin removes it (or the account), the
    /// session's next request is refused and its unfinished uploads are removed.
    key: PublicKey,
    user: String,
    handles: HashMap<String, OpenHandle>,
    next_handle: u64,
    version: Option<u32>,
}

/// Most bytes one READ returns.
const MAX_READ: u32 = 256 * 1024;
/// Most open handles per SFTP session.
const MAX_HANDLES: usize = 64;

fn denied(msg: impl Into<String>) -> StatusReply {
    StatusCode::PermissionDenied.with_message(msg)
}

fn from_jail(e: JailError) -> StatusReply {
    match e {
        JailError::NotFound => StatusCode::NoSuchFile.into(),
        JailError::Symlink => denied("symlinks are not allowed"),
        JailError::NotAllowed(_) => {
            crate::metrics::refused("path");
            denied("path outside your inbox or not allowed")
        }
    }
}

fn from_io(e: std::io::Error) -> StatusReply {
    match e.kind() {
        std::io::ErrorKind::NotFound => StatusCode::NoSuchFile.into(),
        std::io::ErrorKind::PermissionDenied => StatusCode::PermissionDenied.into(),
        _ if e.raw_os_error() == Some(libc::ELOOP) => denied("symlinks are not allowed"),
        _ => StatusCode::Failure.with_message(e.to_string()),
    }
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".to_owned(),
        language_tag: "en-US".to_owned(),
    }
}

/// Attributes of a regular file or folder; symlinks and others are hidden.
fn attrs_of(m: &std::fs::Metadata) -> Option<FileAttributes> {
    let t = m.file_type();
    (t.is_file() || t.is_dir()).then(|| FileAttributes::from(m))
}

impl SftpSession {
    /// Whether the login behind this session has been taken away since: the account removed
    /// or given to another directory, or the session's key removed.
    fn revoked(&self) -> bool {
        match lock(&self.shared.accounts).get(&self.user) {
            Some(a) => {
                !Arc::ptr_eq(a, &self.account)
                    || !lock(&a.keys)
                        .iter()
                        .any(|k| k.key_data() == self.key.key_data())
            }
            None => true,
        }
    }

    /// Refuses every request of a revoked session (see [`SftpSession::revoked`]); its
    /// unfinished uploads are removed first, as when a connection drops, so no partial file is
    /// ever processed as a delivery.
    fn ensure_live(&mut self) -> Result<(), StatusReply> {
        if !self.revoked() {
            return Ok(());
        }
        self.abort_uploads("its key or account was removed");
        crate::metrics::refused("revoked");
        Err(denied(
            "access revoked: this account or key was removed by an administrator; \
             reconnect with a key that is still authorized",
        ))
    }

    /// Closes and removes every upload still open (not closed by the client): it is
    /// incomplete and must never become a delivery.
    fn abort_uploads(&mut self, why: &str) {
        let mut writers = 0;
        let open: Vec<String> = self.handles.keys().cloned().collect();
        for name in open {
            if !matches!(
                self.handles.get(&name),
                Some(OpenHandle::File { writable: true, .. })
            ) {
                continue;
            }
            if let Some(OpenHandle::File { file, path, .. }) = self.handles.remove(&name) {
                drop(file);
                writers += 1;
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove an unfinished upload");
                } else {
                    tracing::warn!(user = %self.user, path = %path.display(), why, "removed an unfinished upload");
                }
            }
        }
        if writers > 0 && tokio::runtime::Handle::try_current().is_ok() {
            {
                let mut act = lock(&self.account.activity);
                act.open_writers = act.open_writers.saturating_sub(writers);
                act.generation += 1;
            }
            schedule(
                self.shared.clone(),
                self.account.clone(),
                self.shared.debounce,
            );
        }
    }

    fn resolve(&self, path: &str) -> Result<jail::Resolved, StatusReply> {
        jail::resolve(&self.account.inbox, path).map_err(from_jail)
    }

    fn new_handle(&mut self, h: OpenHandle) -> Result<String, StatusReply> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(StatusCode::Failure.with_message("too many open handles"));
        }
        self.next_handle += 1;
        let name = format!("h{}", self.next_handle);
        self.handles.insert(name.clone(), h);
        Ok(name)
    }

    fn files_at_root(&self) -> usize {
        std::fs::read_dir(&self.account.inbox)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                    .count()
            })
            .unwrap_or(0)
    }

    /// A write handle closed (or the session ended with it open).
    fn writer_closed(&self) {
        {
            let mut act = lock(&self.account.activity);
            act.open_writers = act.open_writers.saturating_sub(1);
            act.generation += 1;
        }
        schedule(
            self.shared.clone(),
            self.account.clone(),
            self.shared.debounce,
        );
    }
}

impl Drop for SftpSession {
    fn drop(&mut self) {
        // An upload whose connection dropped before CLOSE is incomplete: it must never be
        // processed as a delivery (a file cut at a row boundary would look valid), so remove it.
        self.abort_uploads("the connection ended before close");
    }
}

impl russh_sftp::server::Handler for SftpSession {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported.into()
    }

    async fn init(
        &mut self,
        version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        if self.version.is_some() {
            return Err(StatusCode::ConnectionLost.into());
        }
        self.version = Some(version);
        Ok(Version::new())
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        self.ensure_live()?;
        let r = self.resolve(&path)?;
        Ok(Name {
            id,
            files: vec![File::dummy(r.virtual_path)],
        })
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        self.ensure_live()?;
        let r = self.resolve(&path)?;
        let m = std::fs::symlink_metadata(&r.path).map_err(from_io)?;
        if !m.is_dir() {
            return Err(StatusCode::NoSuchFile.with_message("not a folder"));
        }
        let handle = self.new_handle(OpenHandle::Dir {
            path: r.path,
            done: false,
        })?;
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        self.ensure_live()?;
        let Some(OpenHandle::Dir { path, done }) = self.handles.get_mut(&handle) else {
            return Err(StatusCode::Failure.with_message("bad handle"));
        };
        if *done {
            return Err(StatusCode::Eof.into());
        }
        *done = true;
        let mut files = Vec::new();
        for e in std::fs::read_dir(&*path).map_err(from_io)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if let Some(a) = e.metadata().ok().as_ref().and_then(attrs_of) {
                files.push(File::new(name, a));
            }
        }
        files.sort_by(|a, b| a.filename.cmp(&b.filename));
        Ok(Name { id, files })
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        self.ensure_live()?;
        let r = self.resolve(&filename)?;
        let write = pflags.intersects(
            OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE,
        );
        if write && r.place != Place::Upload {
            return Err(denied(
                "uploads go to the inbox root; this path is read-only",
            ));
        }
        let existing = std::fs::symlink_metadata(&r.path).ok();
        if let Some(m) = &existing {
            if !m.is_file() {
                return Err(denied("not a regular file"));
            }
        }
        if write && existing.is_none() {
            if !pflags.contains(OpenFlags::CREATE) {
                return Err(StatusCode::NoSuchFile.into());
            }
            if self.files_at_root() >= self.shared.max_files {
                crate::metrics::refused("quota");
                return Err(StatusCode::Failure.with_message(format!(
                    "quota: at most {} files in the inbox",
                    self.shared.max_files
                )));
            }
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.read(pflags.contains(OpenFlags::READ) || !write)
            .write(write)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o640);
        if write {
            opts.create(pflags.contains(OpenFlags::CREATE))
                .truncate(pflags.contains(OpenFlags::TRUNCATE));
            if pflags.contains(OpenFlags::EXCLUDE) {
                opts.create_new(true);
            }
        }
        // Counted before the file exists, so a delivery claim cannot slip in between.
        if write {
            lock(&self.account.activity).open_writers += 1;
        }
        let file = match opts.open(&r.path) {
            Ok(f) => f,
            Err(e) => {
                if write {
                    self.writer_closed();
                }
                return Err(from_io(e));
            }
        };
        let handle = match self.new_handle(OpenHandle::File {
            file,
            writable: write,
            path: r.path.clone(),
        }) {
            Ok(h) => h,
            Err(e) => {
                if write {
                    self.writer_closed();
                }
                return Err(e);
            }
        };
        tracing::debug!(user = %self.user, path = %r.virtual_path, write, "SFTP open");
        Ok(Handle { id, handle })
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        self.ensure_live()?;
        let Some(OpenHandle::File { file, .. }) = self.handles.get(&handle) else {
            return Err(StatusCode::Failure.with_message("bad handle"));
        };
        let mut buf = vec![0u8; len.min(MAX_READ) as usize];
        let n = file.read_at(&mut buf, offset).map_err(from_io)?;
        if n == 0 {
            return Err(StatusCode::Eof.into());
        }
        buf.truncate(n);
        Ok(Data { id, data: buf })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        self.ensure_live()?;
        let Some(OpenHandle::File {
            file,
            writable: true,
            ..
        }) = self.handles.get(&handle)
        else {
            return Err(denied("handle not open for writing"));
        };
        let end = offset.saturating_add(data.len() as u64);
        if end > self.shared.max_file_bytes {
            crate::metrics::refused("quota");
            return Err(StatusCode::Failure.with_message(format!(
                "quota: files are limited to {} bytes",
                self.shared.max_file_bytes
            )));
        }
        file.write_all_at(&data, offset).map_err(from_io)?;
        Ok(ok(id))
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(OpenHandle::File { file, writable, .. }) => {
                drop(file);
                if writable {
                    self.writer_closed();
                }
                Ok(ok(id))
            }
            Some(OpenHandle::Dir { .. }) => Ok(ok(id)),
            None => Err(StatusCode::Failure.with_message("bad handle")),
        }
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.ensure_live()?;
        self.stat(id, path).await
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.ensure_live()?;
        let r = self.resolve(&path)?;
        let m = std::fs::symlink_metadata(&r.path).map_err(from_io)?;
        let attrs = attrs_of(&m).ok_or_else(|| denied("not a regular file"))?;
        Ok(Attrs { id, attrs })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        self.ensure_live()?;
        let m = match self.handles.get(&handle) {
            Some(OpenHandle::File { file, .. }) => file.metadata().map_err(from_io)?,
            Some(OpenHandle::Dir { path, .. }) => {
                std::fs::symlink_metadata(path).map_err(from_io)?
            }
            None => return Err(StatusCode::Failure.with_message("bad handle")),
        };
        let attrs = attrs_of(&m).ok_or_else(|| denied("not a regular file"))?;
        Ok(Attrs { id, attrs })
    }

    /// Permissions and times are ours to keep: accepted and ignored (clients send them after
    /// uploads with `put -p`).
    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        self.ensure_live()?;
        self.resolve(&path)?;
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        self.ensure_live()?;
        if !self.handles.contains_key(&handle) {
            return Err(StatusCode::Failure.with_message("bad handle"));
        }
        Ok(ok(id))
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        self.ensure_live()?;
        let r = self.resolve(&filename)?;
        if r.place != Place::Upload {
            return Err(denied("read-only"));
        }
        let m = std::fs::symlink_metadata(&r.path).map_err(from_io)?;
        if !m.is_file() {
            return Err(denied("not a regular file"));
        }
        std::fs::remove_file(&r.path).map_err(from_io)?;
        Ok(ok(id))
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        self.ensure_live()?;
        let from = self.resolve(&oldpath)?;
        let to = self.resolve(&newpath)?;
        if from.place != Place::Upload || to.place != Place::Upload {
            return Err(denied("only files at the inbox root can be renamed"));
        }
        let m = std::fs::symlink_metadata(&from.path).map_err(from_io)?;
        if !m.is_file() {
            return Err(denied("not a regular file"));
        }
        if std::fs::symlink_metadata(&to.path).is_ok() {
            return Err(StatusCode::Failure.with_message("target exists"));
        }
        std::fs::rename(&from.path, &to.path).map_err(from_io)?;
        // A rename can complete a delivery (upload to a temporary name, then rename).
        {
            let mut act = lock(&self.account.activity);
            act.generation += 1;
        }
        schedule(
            self.shared.clone(),
            self.account.clone(),
            self.shared.debounce,
        );
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        _id: u32,
        _path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        self.ensure_live()?;
        Err(denied("folders cannot be created"))
    }

    async fn rmdir(&mut self, _id: u32, _path: String) -> Result<Status, Self::Error> {
        self.ensure_live()?;
        Err(denied("folders cannot be removed"))
    }

    async fn symlink(
        &mut self,
        _id: u32,
        _linkpath: String,
        _targetpath: String,
    ) -> Result<Status, Self::Error> {
        self.ensure_live()?;
        crate::metrics::refused("symlink");
        Err(denied("symlinks are not allowed"))
    }

    async fn readlink(&mut self, _id: u32, _path: String) -> Result<Name, Self::Error> {
        self.ensure_live()?;
        Err(denied("symlinks are not allowed"))
    }
}
