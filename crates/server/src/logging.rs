//! Logs: JSON lines when stdout is not a terminal (collectors), readable text otherwise.
//! Logs go to stderr so stdout stays for what the commands print.
//!
//! The level filter and the output format sit behind reload handles so `PATCH
//! /admin/settings/log` changes them while the server runs ([`set_level`], [`set_format`]).

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::{LogConfig, LogFormat};

/// The installed filter's handle (absent until [`init`] installed the subscriber).
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// What the output layer sits on: the registry under the (reloadable) level filter.
type Filtered = tracing_subscriber::layer::Layered<reload::Layer<EnvFilter, Registry>, Registry>;
/// The output layer (JSON lines or text), boxed so [`set_format`] can swap one for the other.
type Output = Box<dyn tracing_subscriber::Layer<Filtered> + Send + Sync>;

/// The installed output layer's handle (absent until [`init`] installed the subscriber).
static OUTPUT: OnceLock<reload::Handle<Output, Filtered>> = OnceLock::new();

fn output(format: LogFormat) -> Output {
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    if json {
        Box::new(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_writer(std::io::stderr),
        )
    } else {
        Box::new(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr),
        )
    }
}

pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, filter_handle) = reload::Layer::new(filter);
    let (output, output_handle) = reload::Layer::new(output(config.format));
    // try_init: a second call (tests) must not panic.
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init();
    if installed.is_ok() {
        let _ = FILTER.set(filter_handle);
        let _ = OUTPUT.set(output_handle);
    }
}

/// Switches the output between JSON lines and text now (no-op when this process installed no
/// subscriber): `PATCH /admin/settings/log` with `format`.
pub fn set_format(format: LogFormat) -> Result<(), String> {
    match OUTPUT.get() {
        Some(handle) => handle.reload(output(format)).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

/// Checks a level filter (`info`, `idbridge_api=debug,info`): the reason when it is not one.
pub fn check_level(level: &str) -> Result<(), String> {
    EnvFilter::try_new(level).map(|_| ()).map_err(|e| {
        format!("not a log filter ({e}); use e.g. `info` or `idbridge_api=debug,info`")
    })
}

/// Puts a new level filter in force now (no-op when this process installed no subscriber).
pub fn set_level(level: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
    match FILTER.get() {
        Some(handle) => handle.reload(filter).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}
