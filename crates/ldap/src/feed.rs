//! The stored configuration of one LDAP directory's feed (`idbridge_directory::feeds`, kind
//! `ldap`): the schedule and the connection settings, as the admin API takes them and the
//! `[[ldap_directories]]` config entries seed them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::scheduler::Schedule;
use crate::settings::LdapSettings;

/// Name of the sealed bind password in the feed record.
pub const BIND_PASSWORD_SECRET: &str = "bind_password";

fn default_full() -> u64 {
    3600
}
fn default_delta() -> u64 {
    300
}

/// One LDAP directory's feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapFeed {
    /// Seconds between full syncs (the only runs that see deletions).
    #[serde(default = "default_full")]
    pub full_sync_interval_secs: u64,
    /// Seconds between delta syncs.
    #[serde(default = "default_delta")]
    pub delta_sync_interval_secs: u64,
    /// Connection, mapping and guard settings.
    pub ldap: LdapSettings,
}

impl LdapFeed {
    /// Checks intervals and settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.full_sync_interval_secs == 0 || self.delta_sync_interval_secs == 0 {
            return Err(ConfigError::Invalid(
                "full_sync_interval_secs and delta_sync_interval_secs must be at least 1".into(),
            ));
        }
        self.ldap.validate().map(|_| ())
    }

    /// The scheduler's intervals.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            full_every: Duration::from_secs(self.full_sync_interval_secs),
            delta_every: Duration::from_secs(self.delta_sync_interval_secs),
        }
    }
}
