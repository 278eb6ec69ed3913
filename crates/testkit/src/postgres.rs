//! A private PostgreSQL server (Debian's `postgresql` package, 15): `initdb` into a temp dir,
//! trust authentication for `postgres` on 127.0.0.1 only, a free loopback port, `fsync` on (the
//! default: crash tests rely on it). Stopped (fast shutdown) on drop; [`Postgres::shared`] keeps
//! one server per test process and stops it when the process exits.
//!
//! As root the server runs as the `postgres` user (it refuses to run as root).

// setuid/prctl between fork and exec, kill(2) and atexit on our own server.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::slapd::free_port;
use crate::{find_bin, PeerError};

/// The shared server's pid and temp dir, for the `atexit` hook.
static AT_EXIT: Mutex<Option<(Option<i32>, Option<PathBuf>)>> = Mutex::new(None);

const HINT: &str = "install PostgreSQL with scripts/test-deps.sh \
     (snippet scripts/test-deps.d/postgres.sh: apt postgresql)";

/// The directory of the PostgreSQL binaries (`initdb`, `postgres`, `psql`).
fn bin_dir() -> Result<PathBuf, PeerError> {
    let versioned = Path::new("/usr/lib/postgresql");
    if let Ok(entries) = std::fs::read_dir(versioned) {
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("postgres").exists())
            .collect();
        dirs.sort();
        if let Some(dir) = dirs.pop() {
            return Ok(dir);
        }
    }
    find_bin("postgres", HINT).map(|p| p.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// uid/gid of the `postgres` account, when running as root.
fn run_as() -> Result<Option<(u32, u32)>, PeerError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::ffi::CString::new("postgres").map_err(|e| PeerError::Failed(e.to_string()))?;
    // SAFETY: getpwnam with a valid C string; the result is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(PeerError::Failed(format!(
            "running as root needs the `postgres` account: {HINT}"
        )));
    }
    // SAFETY: pw is non-null and points to getpwnam's static buffer.
    Ok(Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) }))
}

fn command(bin: &Path, user: Option<(u32, u32)>, die_with_parent: bool) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(bin);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = user {
                if libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if die_with_parent {
                // SIGINT = fast shutdown, should the test process die without stopping it.
                // Set after setuid, which clears it.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
            }
            Ok(())
        });
    }
    cmd
}

fn chown(path: &Path, user: Option<(u32, u32)>) -> Result<(), PeerError> {
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(PeerError::io(format!("chown {}", path.display())))?;
    }
    Ok(())
}

/// A running private PostgreSQL server.
pub struct Postgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    user: Option<(u32, u32)>,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("port", &self.port)
            .finish()
    }
}

impl Postgres {
    /// `initdb` + start on a free loopback port. Takes a second or two.
    pub fn start() -> Result<Self, PeerError> {
        let bin = bin_dir()?;
        let user = run_as()?;
        let dir = tempfile::Builder::new()
            .prefix("idbridge-pg-")
            .tempdir()
            .map_err(PeerError::io("temp dir"))?;
        chown(dir.path(), user)?;
        let data = dir.path().join("data");
        let out = command(&bin.join("initdb"), user, false)
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(PeerError::io("running initdb"))?;
        if !out.status.success() {
            return Err(PeerError::Failed(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let log = dir.path().join("postgres.log");
        let mut pg = Postgres {
            _dir: dir,
            data,
            bin,
            user,
            port: free_port()?,
            child: None,
            log,
        };
        pg.start_server()?;
        Ok(pg)
    }

    /// One server for the whole test process, started on first use and stopped when the
    /// process exits (normally: `atexit`; killed: the server's parent-death signal).
    pub fn shared() -> Result<&'static Postgres, PeerError> {
        static SHARED: OnceLock<Result<&'static Postgres, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                // Started from a thread that never ends: the parent-death signal follows the
                // thread that forked, and test threads end.
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let started = Postgres::start().map(|pg| &*Box::leak(Box::new(pg)));
                    let _ = tx.send(started.map_err(|e| e.to_string()));
                    loop {
                        std::thread::park();
                    }
                });
                let pg = rx.recv().map_err(|e| e.to_string()).and_then(|r| r)?;
                *AT_EXIT.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((pg.child_pid(), pg.data.parent().map(Path::to_path_buf)));
                extern "C" fn stop_shared() {
                    let taken = AT_EXIT.lock().ok().and_then(|mut g| g.take());
                    if let Some((pid, dir)) = taken {
                        if let Some(pid) = pid {
                            // SAFETY: signalling our own child.
                            unsafe { libc::kill(pid, libc::SIGINT) };
                            let deadline = Instant::now() + Duration::from_secs(10);
                            // SAFETY: kill(pid, 0) only probes.
                            while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
                                let mut status = 0;
                                // SAFETY: reaping our own child.
                                unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                        if let Some(dir) = dir {
                            let _ = std::fs::remove_dir_all(dir);
                        }
                    }
                }
                // SAFETY: registering a plain extern "C" function.
                unsafe { libc::atexit(stop_shared) };
                Ok(pg)
            })
            .clone()
            .map_err(PeerError::Failed)
    }

    fn child_pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok())
    }

    fn start_server(&mut self) -> Result<(), PeerError> {
        let log = std::fs::File::create(&self.log).map_err(PeerError::io("postgres log"))?;
        chown(&self.log, self.user)?;
        let log2 = log.try_clone().map_err(PeerError::io("postgres log"))?;
        let socket_dir = self
            .data
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let child = command(&self.bin.join("postgres"), self.user, true)
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&socket_dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=on",
                "-c",
                "synchronous_commit=on",
                "-c",
                "max_connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(PeerError::io("starting postgres"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.psql("postgres", "SELECT 1").is_ok() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(PeerError::Failed(format!(
                        "postgres exited ({status}): {}",
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(PeerError::Failed(format!(
                    "postgres did not accept connections within 30 s: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A libpq-style connection string for database `db` as `postgres`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }

    /// Runs SQL with the real `psql` in database `db`; its output (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, PeerError> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(PeerError::io("running psql"))?;
        if !out.status.success() {
            return Err(PeerError::Failed(format!(
                "psql {sql:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Creates database `name` (`[a-z0-9_]`) unless it exists; returns its connection string.
    pub fn database(&self, name: &str) -> Result<String, PeerError> {
        static CREATING: Mutex<()> = Mutex::new(());
        let _one_at_a_time = CREATING.lock().unwrap_or_else(|p| p.into_inner());
        let exists = self.psql(
            "postgres",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"),
        )?;
        if exists != "1" {
            self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        }
        Ok(self.url(name))
    }

    /// A database named after `path` (a test's temp dir): the same path, the same database, so
    /// "reopen the store in this dir" means the same data.
    pub fn database_for(&self, path: &Path) -> Result<String, PeerError> {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in path.as_os_str().as_encoded_bytes() {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.database(&format!("t_{h:016x}"))
    }

    /// Kills the server with SIGKILL (a crash: no shutdown checkpoint).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Backends notice the postmaster's death and exit; wait until the port is free.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server again on the same data dir and port (crash recovery runs).
    pub fn restart(&mut self) -> Result<(), PeerError> {
        // Orphaned backends of a killed server may hold its shared memory for a moment: the
        // new postmaster refuses to start until they are gone.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.start_server() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Fast shutdown (waits for it).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(pid) = i32::try_from(c.id()) {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(pid, libc::SIGINT) };
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
