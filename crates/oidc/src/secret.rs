//! A string that must never reach a log line, an error message or an API response.

use std::fmt;

/// A client secret (or any other credential) held in memory.
///
/// `Debug` and `Display` print `[redacted]`, and the type implements neither `Serialize` nor
/// `Deserialize`, so it cannot leak through `tracing` fields, `{:?}` of a containing struct, or a
/// JSON response by accident. Reading the value takes an explicit [`Secret::expose`] call, which
/// is easy to audit with grep.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value (for example one the store has just decrypted).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Reads a secret from an environment variable, so deployments can keep it out of the store.
    pub fn from_env(var: &str) -> Result<Self, crate::OidcError> {
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Self(v)),
            // The variable *name* is not secret; the value never appears.
            _ => Err(crate::OidcError::InvalidSettings(format!(
                "environment variable `{var}` holding the client secret is unset or empty"
            ))),
        }
    }

    /// The secret value. Only call this where the value goes on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty (a public client).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn from_env_reads_and_rejects_missing() {
        let name = "IDBRIDGE_OIDC_TEST_SECRET_FROM_ENV";
        // Only this test touches this variable.
        std::env::set_var(name, "env-secret-value");
        let s = Secret::from_env(name).unwrap();
        assert_eq!(s.expose(), "env-secret-value");
        std::env::remove_var(name);
        let err = Secret::from_env(name).unwrap_err();
        assert!(err.to_string().contains(name));
        assert!(!err.to_string().contains("env-secret-value"));
    }
}
