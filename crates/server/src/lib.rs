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
pub mod directories;
pub mod forward_cli;
pub mod keys;
pub mod ldap;
pub mod logging;
pub mod serve;
pub mod sftp_cli;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use idbridge_store::{SledOptions, SledStore, Store};

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

/// The key that seals connection secrets: `IDBRIDGE_SECRET_KEY`, else the data directory's
/// key file (created on first use).
pub fn secret_key(config: &Config) -> anyhow::Result<idbridge_sso::SecretBox> {
    idbridge_sso::SecretBox::load_or_create(
        std::env::var(idbridge_sso::SECRET_KEY_ENV).ok().as_deref(),
        &config.server.data_dir,
    )
    .context("loading the secret key for connection secrets")
}

/// Opens the store in the configured data directory, creating it on first use.
pub fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let dir = &config.server.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let options = SledOptions {
        cache_capacity_bytes: Some(config.server.store_cache_mb.max(8) << 20),
        ..SledOptions::default()
    };
    let store = SledStore::open_with(dir, options).with_context(|| {
        format!(
            "cannot open the store in {} (is another idbridge process using it?)",
            dir.display()
        )
    })?;
    Ok(Arc::new(store))
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
        Command::Import { input } => {
            let config = load_config(cli.config.as_deref())?;
            backup::import(&config, &input)
        }
        Command::Connection { command } => {
            let config = load_config(cli.config.as_deref())?;
            connections::run(&config, command)
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
