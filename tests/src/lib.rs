//! End-to-end test support: starts idbridge and real peers on loopback.
//!
//! - [`TestServer`] runs the real `idbridge serve` binary on a free loopback port with a private
//!   data directory, and stops it when dropped (printing its stderr, which the test runner shows
//!   only for failing tests).
//! - [`run_node_test`] / [`run_python_test`] run the SDK test files under `tests/js` and
//!   `tests/py` against such a server (installed by `scripts/test-deps.sh`).
//! - [`OidcProvider`] runs a real OpenID Provider (`oidc-provider`) for OIDC connections.
//! - [`Slapd`] (from idbridge-testkit, shared with the crates' own tests) runs a private OpenLDAP
//!   `slapd`; [`directory_api`] reads directory results the way an application does.
//! - [`api`] has small checks of the WorkOS wire conventions for raw-HTTP tests.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use idbridge_tests::{run_node_test, TestServer};
//! let server = TestServer::start().await?;
//! let resp = server.get("/organizations").send().await?;
//! assert_eq!(resp.status(), 200);
//! let report = run_node_test("organizations.test.mjs", server.peer_env()).await?;
//! assert!(report.passed > 0);
//! # Ok(()) }
//! ```

pub mod api;
pub mod directory_api;
mod error;
pub mod login_page;
mod oidc_provider;
mod peers;
mod server;

pub use error::HarnessError;
pub use idbridge_testkit::slapd::{
    ldap_group, ldap_person, Slapd, LDAP_ADMIN_DN, LDAP_ADMIN_PW, LDAP_SUFFIX,
};
pub use oidc_provider::{OidcProvider, OidcProviderOptions};
pub use peers::{repo_root, run_node_test, run_python_test, throwaway_key_pair, PeerReport};
pub use server::{free_port, TestServer, TestServerBuilder};
