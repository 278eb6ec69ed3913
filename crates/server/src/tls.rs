//! The HTTPS certificate, replaceable while the server runs.
//!
//! The listener's rustls config asks [`ReloadableCert`] for the certificate at every new
//! handshake. `SIGHUP` (and `POST /admin/tls/reload`) re-reads the configured cert and key
//! files and swaps the pair in one step, so the next handshake presents the new certificate
//! while established connections keep the session they negotiated. A pair that does not load
//! (unreadable file, no certificate, a key that does not match the certificate) is refused
//! with a log line saying why, and the current pair stays in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

/// Why a certificate and key pair was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {message}")]
    Cert { path: PathBuf, message: String },
    #[error("{path} holds no PEM certificate (expected a `BEGIN CERTIFICATE` block)")]
    NoCert { path: PathBuf },
    #[error("cannot read the TLS private key {path}: {message} (expected a PEM PKCS#8, PKCS#1 or SEC1 key)")]
    Key { path: PathBuf, message: String },
    #[error("the TLS key {key} does not fit the certificate {cert}: {message}; put the key that belongs to the certificate in place")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error("the TLS certificate {path} is not valid now ({why}); put a current certificate in place (the one presented now stays)")]
    NotValidNow { path: PathBuf, why: String },
    #[error("building the TLS configuration: {0}")]
    Config(String),
}

/// The pair the listener presents now, with the files it is re-read from.
pub struct ReloadableCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("fingerprint", &fingerprint(&self.current()))
            .finish()
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ReloadableCert {
    /// Loads the pair from `cert_path` and `key_path` (an error when it does not load).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let first = load_pair(cert_path, key_path, &provider)?;
        // At start an expired certificate is served (refusing to start would also take the
        // admin API away), but said loudly; a reload refuses one.
        if let Err(e) = check_validity(&first, cert_path) {
            tracing::error!(error = %e, "serving a TLS certificate that is not valid now");
        }
        Ok(Arc::new(ReloadableCert {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            provider,
            current: RwLock::new(Arc::new(first)),
        }))
    }

    /// The pair presented to the next handshake.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// SHA-256 of the certificate presented now (lowercase hex).
    pub fn current_fingerprint(&self) -> String {
        fingerprint(&self.current())
    }

    /// Re-reads both files and swaps the new pair in; on any error the current pair stays.
    /// Logs and counts the outcome (`idbridge_tls_reloads_total{outcome}`). Returns the new
    /// certificate's SHA-256 fingerprint.
    pub fn reload(&self) -> Result<String, TlsError> {
        let loaded = load_pair(&self.cert_path, &self.key_path, &self.provider)
            .and_then(|pair| check_validity(&pair, &self.cert_path).map(|()| pair));
        match loaded {
            Ok(pair) => {
                let new = fingerprint(&pair);
                let old = {
                    let mut slot = self.current.write().unwrap_or_else(|p| p.into_inner());
                    std::mem::replace(&mut *slot, Arc::new(pair))
                };
                metrics::counter!("idbridge_tls_reloads_total", "outcome" => "ok").increment(1);
                tracing::info!(
                    cert = %self.cert_path.display(),
                    fingerprint_sha256 = %new,
                    previous_fingerprint_sha256 = %fingerprint(&old),
                    "TLS certificate reloaded; new handshakes present it, open connections keep theirs"
                );
                Ok(new)
            }
            Err(e) => {
                metrics::counter!("idbridge_tls_reloads_total", "outcome" => "refused")
                    .increment(1);
                tracing::error!(
                    error = %e,
                    kept_fingerprint_sha256 = %self.current_fingerprint(),
                    "TLS certificate reload refused; still presenting the previous certificate"
                );
                Err(e)
            }
        }
    }

    /// The rustls server config of the HTTPS listener (HTTP/2 and HTTP/1.1 by ALPN), asking
    /// this resolver at every handshake.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// `POST /admin/tls/reload` does what SIGHUP does.
impl idbridge_api::tls_admin::TlsReloader for ReloadableCert {
    fn reload(&self) -> Result<String, String> {
        ReloadableCert::reload(self).map_err(|e| e.to_string())
    }
}

/// Reads a PEM chain and key and checks that the key belongs to the first certificate.
fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert_path.to_path_buf(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCert {
            path: cert_path.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Key {
        path: key_path.to_path_buf(),
        message: e.to_string(),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Key {
            path: key_path.to_path_buf(),
            message: e.to_string(),
        })?;
    let pair = CertifiedKey::new(chain, signing);
    // A key whose public half cannot be compared is refused too: serving a pair that may not
    // match would fail every handshake.
    pair.keys_match().map_err(|e| TlsError::Mismatch {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(pair)
}

/// Refuses an end-entity certificate that has expired or is not valid yet: presenting it would
/// fail every client's handshake.
fn check_validity(pair: &CertifiedKey, path: &Path) -> Result<(), TlsError> {
    let not_valid = |why: String| TlsError::NotValidNow {
        path: path.to_path_buf(),
        why,
    };
    let Some(der) = pair.cert.first() else {
        return Err(TlsError::NoCert {
            path: path.to_path_buf(),
        });
    };
    let cert = openssl::x509::X509::from_der(der).map_err(|e| TlsError::Cert {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let now =
        openssl::asn1::Asn1Time::days_from_now(0).map_err(|e| TlsError::Config(e.to_string()))?;
    if cert.not_after() < now {
        return Err(not_valid(format!("it expired on {}", cert.not_after())));
    }
    if cert.not_before() > now {
        return Err(not_valid(format!(
            "it is valid only from {}",
            cert.not_before()
        )));
    }
    Ok(())
}

/// SHA-256 of a pair's end-entity certificate, lowercase hex.
pub fn fingerprint(pair: &CertifiedKey) -> String {
    pair.cert
        .first()
        .map(|c| hex::encode(Sha256::digest(&c[..])))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, rcgen::CertifiedKey) {
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
        let cert = dir.join(format!("{name}-cert.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert, pair.cert.pem()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&key, pair.key_pair.serialize_pem()).unwrap_or_else(|e| panic!("{e}"));
        (cert, key, pair)
    }

    fn sha(pair: &rcgen::CertifiedKey) -> String {
        hex::encode(Sha256::digest(&pair.cert.der()[..]))
    }

    #[test]
    fn reload_swaps_a_good_pair_and_keeps_the_old_one_on_any_bad_pair() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (cert, key, a) = write_pair(dir.path(), "a");
        let resolver = ReloadableCert::load(&cert, &key).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resolver.current_fingerprint(), sha(&a));

        // A new pair in place: the reload presents it.
        let (b_cert, b_key, b) = write_pair(dir.path(), "b");
        std::fs::copy(&b_cert, &cert).unwrap_or_else(|e| panic!("{e}"));
        std::fs::copy(&b_key, &key).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resolver.reload().unwrap_or_else(|e| panic!("{e}")), sha(&b));
        assert_eq!(resolver.current_fingerprint(), sha(&b));

        // A key of another certificate: refused, B stays.
        let (c_cert, _, _) = write_pair(dir.path(), "c");
        std::fs::copy(&c_cert, &cert).unwrap_or_else(|e| panic!("{e}"));
        let err = resolver
            .reload()
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
        assert_eq!(resolver.current_fingerprint(), sha(&b));

        // A certificate file with no certificate, a missing key, garbage in the key file.
        std::fs::write(&cert, "not pem").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(resolver.reload(), Err(TlsError::NoCert { .. })));
        std::fs::copy(&b_cert, &cert).unwrap_or_else(|e| panic!("{e}"));
        std::fs::remove_file(&key).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(resolver.reload(), Err(TlsError::Key { .. })));
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(resolver.reload(), Err(TlsError::Key { .. })));
        assert_eq!(resolver.current_fingerprint(), sha(&b));

        // The server config builds on the resolver.
        assert!(resolver.server_config().is_ok());
        // Loading a bad pair at start is an error too.
        assert!(ReloadableCert::load(&cert, &key).is_err());

        // An expired certificate with its own key, and one not valid yet: refused, B stays.
        for (from, to) in [((2020, 1, 1), (2021, 1, 1)), ((2090, 1, 1), (2091, 1, 1))] {
            let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])
                .unwrap_or_else(|e| panic!("{e}"));
            params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
            params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
            let kp = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
            let c = params.self_signed(&kp).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(&cert, c.pem()).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(&key, kp.serialize_pem()).unwrap_or_else(|e| panic!("{e}"));
            let err = resolver
                .reload()
                .err()
                .unwrap_or_else(|| panic!("accepted a certificate valid {from:?}..{to:?}"));
            assert!(matches!(err, TlsError::NotValidNow { .. }), "{err}");
            assert_eq!(resolver.current_fingerprint(), sha(&b));
            // At start it is served (with an error logged), so the admin API stays reachable.
            assert!(ReloadableCert::load(&cert, &key).is_ok());
        }
    }
}
