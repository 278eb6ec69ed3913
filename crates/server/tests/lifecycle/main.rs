//! The server's life cycle through the real binary: HTTPS certificate reload (SIGHUP and
//! `POST /admin/tls/reload`), graceful shutdown (drain, workers, store closed), secrets from the environment or files (Kubernetes
//! Secrets), and upgrades
//! (a data directory written by an earlier build opens and serves; a newer one is refused).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
mod postgres;
mod secrets;
mod shutdown;
mod tls_reload;
mod upgrade;
