//! The client secret never appears in `Debug` output, errors, serialized identities or logs
//! (captured at TRACE level), on success and on every failure path that handles the secret.
//! Its own test binary, because it installs a global tracing subscriber.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use idbridge_oidc::AuthMethod;

#[tokio::test]
async fn secret_never_appears_in_debug_errors_or_logs() {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // Global, not thread-scoped: this binary holds only this test, and a scoped subscriber can
    // miss events from callsites whose interest another thread cached first.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let op = MockOp::start(TestKey::rsa("rsa-1", "RS256")).await;
    let client = op.client();
    let mut seen = vec![format!("{client:?}"), format!("{:?}", op.settings())];
    let id = login(&client).await.unwrap();
    seen.push(format!("{id:?}"));
    seen.push(serde_json::to_string(&id).unwrap());
    // Failures along every path that touches the secret.
    for method in [AuthMethod::ClientSecretBasic, AuthMethod::ClientSecretPost] {
        op.tweak(|t| t.auth_method = method);
        let other = if method == AuthMethod::ClientSecretBasic {
            AuthMethod::ClientSecretPost
        } else {
            AuthMethod::ClientSecretBasic
        };
        let err = login(&op.client_with(|s| s.auth_method = other))
            .await
            .unwrap_err();
        seen.push(err.to_string());
        seen.push(format!("{err:?}"));
    }
    op.tweak(|t| t.wrong_at_hash = true);
    let err = login(&op.client()).await.unwrap_err();
    seen.push(format!("{err} {err:?}"));
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("OIDC login verified"),
        "the log capture works"
    );
    seen.push(logs);
    for s in &seen {
        assert!(!s.contains(CLIENT_SECRET), "secret leaked in: {s}");
    }
    assert!(seen[0].contains("[redacted]"));
}
