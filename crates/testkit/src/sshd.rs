//! A private OpenSSH `sshd` on loopback: the customer's SFTP server that idbridge pulls
//! deliveries from. Its own config, host key and authorized keys; run inside `unshare -m` with
//! a tmpfs `/run` for its privilege-separation folder (no system state touched). Stopped on
//! drop.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{find_bin, PeerError};

const HINT: &str = "run ./scripts/test-deps.sh (installs openssh-server)";

/// A running sshd; killed on drop.
#[derive(Debug)]
pub struct Sshd {
    child: Child,
    /// The loopback port it listens on.
    pub port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Our own child (the unshare wrapper exec's into sshd): stopped by pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    /// Starts sshd on a free loopback port with `host_key` (a private key file) and the keys
    /// in `authorized` allowed to log in (as the current user, with the internal SFTP
    /// server). `dir` holds its config and pid file.
    pub fn start(dir: &Path, host_key: &Path, authorized: &Path) -> Result<Sshd, PeerError> {
        let sshd = find_bin("sshd", HINT)?;
        let unshare = find_bin("unshare", HINT)?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(PeerError::io("picking a free port"))?
            .port();
        let conf = dir.join("sshd_config");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\n\
                 AuthorizedKeysFile {}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\nLogLevel ERROR\n",
                host_key.display(),
                dir.join("sshd.pid").display(),
                authorized.display()
            ),
        )
        .map_err(PeerError::io(format!("writing {}", conf.display())))?;
        let child = Command::new(unshare)
            .args(["-m", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs tmpfs /run && mkdir -p /run/sshd && exec {} -D -e -f {}",
                sshd.display(),
                conf.display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(PeerError::io("starting sshd"))?;
        let mut running = Sshd { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = running.child.try_wait() {
                return Err(PeerError::Failed(format!(
                    "sshd exited with {status} before listening on {port} (see its stderr above)"
                )));
            }
            if Instant::now() > deadline {
                return Err(PeerError::Failed(format!(
                    "sshd did not listen on 127.0.0.1:{port} within 10 s"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(running)
    }
}
