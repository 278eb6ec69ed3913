//! idbridge's server: configuration, wiring and the command-line subcommands.
//!
//! `main.rs` only parses arguments; everything here can be driven from tests.

#![forbid(unsafe_code)]

pub mod backup;
pub mod certs;
pub mod cli;
pub mod config;
pub mod conn_limits;
pub mod connections;
pub mod console_users;
pub mod declared;
pub mod directories;
pub mod feeds;
pub mod forward_cli;
pub mod idp_cli;
pub mod idp_declared;
pub mod keys;
pub mod ldap;
pub mod logging;
pub mod serve;
pub mod settings;
pub mod sftp_cli;
pub mod store_config;
pub mod tls;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use idbridge_store::{SqliteOptions, SqliteStore, Store};

use crate::cli::{Cli, Command, ConfigCommand};
use crate::config::Config;

/// Loads the config file (if any) and applies environment overrides.
pub fn load_config(file: Option<&Path>) -> anyhow::Result<Config> {
    let mut config = match file {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    config.apply_env(std::env::vars())?;
    Ok(config)
}

/// The directory engine of a store (CLI paths; the server shares the one in its `AppState`),
/// reading organizations through their owner.
pub fn directory_engine(store: Arc<dyn Store>) -> idbridge_directory::DirectoryEngine {
    let orgs = Arc::new(idbridge_sso::organizations::Organizations::new(
        store.clone(),
    ));
    idbridge_directory::DirectoryEngine::new(store, orgs)
}

/// The key that seals connection secrets: `IDBRIDGE_SECRET_KEY` (or the file named by
/// `IDBRIDGE_SECRET_KEY_FILE`, a mounted Secret), else the data directory's key file
/// (created on first use).
pub fn secret_key(config: &Config) -> anyhow::Result<idbridge_sso::SecretBox> {
    let given = keys::env_or_file(idbridge_sso::SECRET_KEY_ENV, |v| std::env::var(v).ok())?;
    idbridge_sso::SecretBox::load_or_create(given.as_deref(), &config.server.data_dir)
        .context("loading the secret key for connection secrets")
}

/// Opens the configured store: PostgreSQL when `[store] backend = "postgres"`, else SQLite
/// in the data directory (`<data>/idbridge.sqlite3`), creating it on first use. A sled store found there (an older release's) is migrated
/// first: see [`migrate_sled_store`].
pub fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if config.store.backend == store_config::StoreBackend::Postgres {
        return config.store.open_postgres();
    }
    let dir = &config.server.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    migrate_sled_store(config)?;
    let options = SqliteOptions {
        cache_mb: config.server.store_cache_mb.max(8),
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(dir, options)
        .with_context(|| format!("cannot open the store in {}", dir.display()))?;
    Ok(Arc::new(store))
}

/// Migrates a sled store in the data directory to SQLite (copy, full export comparison,
/// the sled files kept in `sled-backup-*/`); `None` when there is none. Run at every start
/// and by `idbridge migrate`.
pub fn migrate_sled_store(
    config: &Config,
) -> anyhow::Result<Option<idbridge_store::SledMigration>> {
    let dir = &config.server.data_dir;
    idbridge_store::migrate_sled_dir(dir, config.server.store_cache_mb).with_context(|| {
        format!(
            "migrating the sled store in {} to SQLite failed; the sled store is unchanged              (is another idbridge process using it?)",
            dir.display()
        )
    })
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let config = Config::from_file(&file)?;
            println!(
                "{}: OK ({} declared organization(s), listen {}, data in {})",
                file.display(),
                config.organizations.len(),
                config.server.listen,
                config.server.data_dir.display()
            );
            Ok(())
        }
        Command::Serve => {
            let config = load_config(cli.config.as_deref())?;
            serve::serve(config)
        }
        Command::ApiKey { command } => {
            let config = load_config(cli.config.as_deref())?;
            keys::run(&config, command)
        }
        Command::Export { output } => {
            let config = load_config(cli.config.as_deref())?;
            backup::export(&config, output.as_deref())
        }
        Command::Backup { file } => {
            let config = load_config(cli.config.as_deref())?;
            backup::online(&config, &file)
        }
        Command::Migrate => {
            let config = load_config(cli.config.as_deref())?;
            match migrate_sled_store(&config)? {
                Some(m) => println!(
                    "migrated {} records to {} (verified against a full export of the sled \
                     store); the sled files are in {}: remove it once you no longer need it",
                    m.records,
                    m.sqlite_file.display(),
                    m.sled_backup.display()
                ),
                None => println!(
                    "{} holds no sled store: nothing to migrate",
                    config.server.data_dir.display()
                ),
            }
            Ok(())
        }
        Command::Import { input } => {
            let config = load_config(cli.config.as_deref())?;
            backup::import(&config, &input)
        }
        Command::ConsoleUser { command } => {
            let config = load_config(cli.config.as_deref())?;
            console_users::run(&config, command)
        }
        Command::Connection { command } => {
            let config = load_config(cli.config.as_deref())?;
            connections::run(&config, command)
        }
        Command::Idp { command } => {
            let config = load_config(cli.config.as_deref())?;
            idp_cli::run(&config, command)
        }
        Command::Directory { command } => {
            let config = load_config(cli.config.as_deref())?;
            directories::run(&config, command)
        }
        Command::Certs {
            command: cli::CertsCommand::Dev { dir },
        } => certs::write_dev_pair(&dir),
    }
}
