//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "idbridge",
    version,
    about = "On-prem SSO and directory bridge with a WorkOS-compatible API"
)]
pub struct Cli {
    /// Configuration file (TOML). Without one, the embedded defaults apply.
    #[arg(long, short, global = true, env = "IDBRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve,
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage API keys (the server must be stopped: the store is single-process).
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Write the whole store as JSON lines (backup, migration).
    Export {
        /// Output file; `-` or absent for stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Copy the store into a new SQLite file while the server runs (online backup: a
    /// consistent snapshot, writers go on). To restore, stop the server and put the file in
    /// place of `<data dir>/idbridge.sqlite3` (README: "Backup and restore").
    Backup {
        /// The new backup file (an existing file is never overwritten).
        file: PathBuf,
    },
    /// Convert a sled data directory (older releases) to SQLite; `serve` does this at start.
    /// The old files are kept in `sled-backup-*/` for you to remove.
    Migrate,
    /// Load a JSON-lines export into an empty data directory.
    Import {
        /// The export file; `-` for stdin.
        input: PathBuf,
    },
    /// Operator accounts of the web console (the server must be stopped: the store is
    /// single-process).
    ConsoleUser {
        #[command(subcommand)]
        command: crate::console_users::ConsoleUserCommand,
    },
    /// Manage SSO connections (the server must be stopped: the store is single-process).
    Connection {
        #[command(subcommand)]
        command: ConnectionCommand,
    },
    /// Directories: `create|list|delete|rotate-token` (SCIM tokens shown once), and
    /// `directory sync <id>` runs one LDAP sync in the foreground.
    Directory {
        #[command(subcommand)]
        command: crate::directories::DirectoryCommand,
    },
    /// idbridge as an IdP: `idp sp|oidc-client add|list|show|remove` (the server must be
    /// stopped: the store is single-process).
    Idp {
        #[command(subcommand)]
        command: crate::idp_cli::IdpCommand,
    },
    /// Certificates for local use.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file and explain any error with the offending key.
    Check { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key and print it once.
    Create {
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// List keys (ids, names, last four characters; never the keys).
    List,
    /// Revoke a key by id (`key_...`) or by its last four characters.
    Revoke { key: String },
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write a self-signed certificate and key for localhost (never commit them).
    Dev {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConnectionCommand {
    /// Create from a JSON body shaped like `POST /connections` (a file, or `-` for stdin).
    Create { body: PathBuf },
    /// List connections (id, type, organization, state, name).
    List,
    /// Show a connection's settings: SP entity id, ACS and metadata URLs, certificates (never
    /// private keys or client secrets).
    Show { id: String },
    /// Delete a connection (emits `connection.deleted`).
    Delete { id: String },
    /// Generate new SP signing and encryption keys, keeping the previous ones published.
    RotateKeys { id: String },
}
