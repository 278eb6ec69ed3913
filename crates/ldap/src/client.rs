//! A thin async LDAP client over ldap3: connect (LDAPS / StartTLS / explicitly allowed plain),
//! simple bind, paged subtree searches, base reads and AD ranged retrieval. Every operation is
//! bounded by the configured timeout.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ldap3::adapters::{Adapter, EntriesOnly};
use ldap3::controls::{
    ControlType, EntryState, MakeCritical, PagedResults as PagedResultsControl, RawControl,
    RefreshMode, SyncInfo, SyncRequest,
};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, ResultEntry, Scope, SearchStream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::ad::parse_ranged;
use crate::controls;
pub use crate::entry::Entry;
use crate::error::{ConfigError, LdapError};
use crate::settings::{LdapSettings, Transport};

/// A bound connection.
pub struct Client {
    ldap: Ldap,
    op_timeout: Duration,
    page_size: u32,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

fn tls_config(path: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, ConfigError> {
    let err = |detail: String| ConfigError::CaBundle {
        path: path.display().to_string(),
        detail,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| err(e.to_string()))?;
    for c in certs {
        let c = c.map_err(|e| err(e.to_string()))?;
        roots.add(c).map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("no certificates in the bundle".into()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

async fn bounded<T, E: std::fmt::Display>(
    op: &'static str,
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, LdapError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(|e| LdapError::proto(op, e)),
        Err(_) => Err(LdapError::Timeout {
            op,
            secs: limit.as_secs(),
        }),
    }
}

fn check(op: &'static str, res: ldap3::LdapResult) -> Result<(), LdapError> {
    if res.rc == 0 {
        Ok(())
    } else {
        Err(LdapError::Result {
            op,
            rc: res.rc,
            text: res.text,
        })
    }
}

/// LDAP result code e-syncRefreshRequired (RFC 4533 §3.4): the cookie is too old.
pub const SYNC_REFRESH_REQUIRED: u32 = 4096;

/// What one RFC 4533 refreshOnly search returned.
#[derive(Debug, Default)]
pub struct SyncRead {
    /// Entries added or modified since the cookie (every entry without one), with their
    /// sync UUID; empty when the search was started without keeping entries.
    pub changed: Vec<(Vec<u8>, Entry)>,
    /// UUIDs of the changed entries (empty when entries are not kept).
    pub changed_uuids: HashSet<Vec<u8>>,
    /// UUIDs the server named as still present and unchanged (present phase).
    pub present: HashSet<Vec<u8>>,
    /// UUIDs the server named as deleted or out of scope (delete phase).
    pub deleted: HashSet<Vec<u8>>,
    /// The refresh ended with a present phase (Sync Done refreshDeletes = FALSE): every entry
    /// neither present nor changed is gone from the search's content.
    pub present_phase: bool,
    /// The cookie for the next search.
    pub cookie: Option<Vec<u8>>,
}

/// A running RFC 4533 refreshOnly search (its own stream: the client stays usable).
pub struct SyncSearch {
    stream: SearchStream<'static, String, Vec<String>>,
    op_timeout: Duration,
    keep_entries: bool,
    had_cookie: bool,
    read: SyncRead,
    ended: bool,
}

impl SyncSearch {
    fn take(&mut self, re: ResultEntry) -> Result<(), LdapError> {
        if re.is_intermediate() {
            match controls::sync_info(re)? {
                SyncInfo::NewCookie(c) => self.read.cookie = Some(c),
                SyncInfo::RefreshDelete { cookie, .. }
                | SyncInfo::RefreshPresent { cookie, .. } => {
                    if cookie.is_some() {
                        self.read.cookie = cookie;
                    }
                }
                SyncInfo::SyncIdSet {
                    cookie,
                    refresh_deletes,
                    sync_uuids,
                } => {
                    if cookie.is_some() {
                        self.read.cookie = cookie;
                    }
                    if refresh_deletes {
                        self.read.deleted.extend(sync_uuids);
                    } else {
                        self.read.present.extend(sync_uuids);
                    }
                }
            }
            return Ok(());
        }
        if re.is_ref() {
            return Ok(());
        }
        let state =
            re.1.iter()
                .find(|c| matches!(c.0, Some(ControlType::SyncState)))
                .map(|c| controls::sync_state(&c.1))
                .ok_or_else(|| {
                    LdapError::Malformed("a sync search entry without a Sync State control".into())
                })??;
        if let Some(c) = state.cookie {
            self.read.cookie = Some(c);
        }
        match state.state {
            EntryState::Present => {
                self.read.present.insert(state.entry_uuid);
            }
            EntryState::Delete => {
                self.read.deleted.insert(state.entry_uuid);
            }
            // A seeding search (entries not kept) only wants the cookie.
            EntryState::Add | EntryState::Modify if self.keep_entries => {
                self.read.changed_uuids.insert(state.entry_uuid.clone());
                self.read
                    .changed
                    .push((state.entry_uuid, Entry::from_result(re)?));
            }
            EntryState::Add | EntryState::Modify => {}
        }
        Ok(())
    }

    /// Reads one message; `false` once the search is over. The first message of a search
    /// shows the server has fixed the state its cookie will name.
    ///
    /// A malformed RFC 4533 control or Sync Info message is [`LdapError::Malformed`].
    pub async fn step(&mut self) -> Result<bool, LdapError> {
        if self.ended {
            return Ok(false);
        }
        match bounded("sync search", self.op_timeout, self.stream.next()).await? {
            Some(re) => {
                self.take(re)?;
                Ok(true)
            }
            None => {
                self.ended = true;
                Ok(false)
            }
        }
    }

    /// Reads to the end and checks the result: a refused cookie is
    /// [`LdapError::CookieRefused`], a missing Sync Done control is malformed.
    pub async fn finish(mut self) -> Result<SyncRead, LdapError> {
        let drained = async {
            while self.step().await? {}
            Ok::<(), LdapError>(())
        }
        .await;
        if let Err(e) = drained {
            let _ = tokio::time::timeout(self.op_timeout, self.stream.finish()).await;
            return Err(e);
        }
        let res = bounded("sync search", self.op_timeout, async {
            Ok::<_, LdapError>(self.stream.finish().await)
        })
        .await?;
        if res.rc == SYNC_REFRESH_REQUIRED || (self.had_cookie && matches!(res.rc, 2 | 53 | 80)) {
            return Err(LdapError::CookieRefused {
                rc: res.rc,
                text: res.text,
            });
        }
        if res.rc == 12 {
            // unavailableCriticalExtension: the module may be loaded (the root DSE lists the
            // control) without the overlay on this database.
            return Err(LdapError::SyncUnsupported);
        }
        check("sync search", res.clone())?;
        let done = res
            .ctrls
            .iter()
            .find(|c| matches!(c.0, Some(ControlType::SyncDone)))
            .map(|c| controls::sync_done(&c.1))
            .ok_or_else(|| {
                LdapError::Malformed(
                    "the sync search ended without a Sync Done control (server ignored RFC 4533?)"
                        .into(),
                )
            })??;
        if done.cookie.is_some() {
            self.read.cookie = done.cookie;
        }
        self.read.present_phase = !done.refresh_deletes;
        Ok(self.read)
    }
}

impl Client {
    /// Starts an RFC 4533 refreshOnly subtree search (the Sync Request control is critical,
    /// so a server without it refuses instead of answering a plain search). Without a cookie
    /// the server sends its whole content and the cookie that names it.
    pub async fn sync_start(
        &mut self,
        base: &str,
        filter: &str,
        attrs: &[String],
        cookie: Option<Vec<u8>>,
        keep_entries: bool,
    ) -> Result<SyncSearch, LdapError> {
        let t = self.op_timeout;
        let had_cookie = cookie.is_some();
        self.ldap.with_timeout(t);
        self.ldap.with_controls(
            SyncRequest {
                mode: RefreshMode::RefreshOnly,
                cookie,
                reload_hint: false,
            }
            .critical(),
        );
        let stream = bounded(
            "sync search",
            t,
            self.ldap
                .streaming_search(base, Scope::Subtree, filter, attrs.to_vec()),
        )
        .await?;
        Ok(SyncSearch {
            stream,
            op_timeout: t,
            keep_entries,
            had_cookie,
            read: SyncRead::default(),
            ended: false,
        })
    }

    /// Whether the root DSE lists `oid` in `supportedControl`.
    pub async fn supports_control(&mut self, oid: &str) -> Result<bool, LdapError> {
        let dse = self.root_dse(&["supportedControl"]).await?;
        Ok(dse
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("supportedControl"))
            .flat_map(|(_, v)| v.iter())
            .any(|v| v.trim() == oid))
    }

    /// Connects and binds (simple bind with the configured DN and secret, else anonymous).
    pub async fn connect(s: &LdapSettings) -> Result<Client, LdapError> {
        let mut client = Self::open(s).await?;
        if let (Some(dn), Some(pw)) = (&s.bind_dn, s.bind_password()?) {
            client.simple_bind(dn, &pw).await?;
        }
        Ok(client)
    }

    /// Connects (LDAPS, StartTLS or explicitly allowed plain, as the settings say) without
    /// binding: the connection of a user's password check ([`crate::bind_auth`]).
    pub async fn open(s: &LdapSettings) -> Result<Client, LdapError> {
        let transport = s.validate()?;
        let mut cs = LdapConnSettings::new().set_conn_timeout(s.connect_timeout());
        if transport == Transport::StartTls {
            cs = cs.set_starttls(true);
        }
        if transport != Transport::Plain {
            if s.danger_skip_tls_verify {
                cs = cs.set_no_tls_verify(true);
            } else if let Some(ca) = &s.ca_file {
                cs = cs.set_config(tls_config(ca)?);
            }
        }
        let (conn, ldap) = bounded(
            "connect",
            s.connect_timeout() + Duration::from_secs(1),
            LdapConnAsync::with_settings(cs, &s.url),
        )
        .await?;
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "ldap connection ended");
            }
        });
        Ok(Client {
            ldap,
            op_timeout: s.op_timeout(),
            page_size: s.page_size,
            driver,
        })
    }

    /// A simple bind on this connection; a refusal is [`LdapError::Result`] with the server's
    /// result code and diagnostic text. The password is never logged.
    pub async fn simple_bind(&mut self, dn: &str, password: &str) -> Result<(), LdapError> {
        let t = self.op_timeout;
        self.ldap.with_timeout(t);
        let res = bounded("bind", t, self.ldap.simple_bind(dn, password)).await?;
        check("bind", res)
    }

    /// A subtree search, paged when a page size is set; `f` sees each entry. Any failure —
    /// including a missing base DN or a malformed paging control — is an error, never a short
    /// result.
    ///
    /// Paging is our own loop (RFC 2696) rather than ldap3's `PagedResults` adapter, whose
    /// control parser panics on a malformed reply (see [`controls`]).
    pub async fn search_each(
        &mut self,
        base: &str,
        filter: &str,
        attrs: &[String],
        f: impl FnMut(Entry) -> Result<(), LdapError>,
    ) -> Result<u64, LdapError> {
        self.search_each_with(base, filter, attrs, &[], f).await
    }

    /// [`Client::search_each`] with request controls of its own on every page (AD's Show
    /// Deleted, for instance).
    pub async fn search_each_with(
        &mut self,
        base: &str,
        filter: &str,
        attrs: &[String],
        controls: &[RawControl],
        mut f: impl FnMut(Entry) -> Result<(), LdapError>,
    ) -> Result<u64, LdapError> {
        let t = self.op_timeout;
        let mut n = 0u64;
        let mut cookie = Vec::new();
        loop {
            self.ldap.with_timeout(t);
            let (page_start, sent) = (n, std::mem::take(&mut cookie));
            let mut request = controls.to_vec();
            if self.page_size > 0 {
                request.push(RawControl::from(PagedResultsControl {
                    size: self.page_size as i32,
                    cookie: sent.clone(),
                }));
            }
            if !request.is_empty() {
                self.ldap.with_controls(request);
            }
            let adapters: Vec<Box<dyn Adapter<'_, String, Vec<String>>>> =
                vec![Box::new(EntriesOnly::new())];
            let mut stream = bounded(
                "search",
                t,
                self.ldap.streaming_search_with(
                    adapters,
                    base,
                    Scope::Subtree,
                    filter,
                    attrs.to_vec(),
                ),
            )
            .await?;
            loop {
                let next = bounded("search", t, stream.next()).await;
                match next {
                    Ok(Some(re)) => {
                        n += 1;
                        f(Entry::from_result(re)?)?;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = stream.finish().await;
                        return Err(e);
                    }
                }
            }
            let res = bounded("search", t, async {
                Ok::<_, LdapError>(stream.finish().await)
            })
            .await?;
            let paged = res
                .ctrls
                .iter()
                .find(|c| matches!(c.0, Some(ControlType::PagedResults)))
                .map(|c| controls::paged_results(&c.1))
                .transpose()?;
            check("search", res)?;
            // No control: the server did not page (it sent everything); an empty cookie: that
            // was the last page.
            match paged {
                Some(p) if self.page_size > 0 && !p.cookie.is_empty() => {
                    if n == page_start && p.cookie == sent {
                        return Err(LdapError::Malformed(
                            "paged search: the server sent the same cookie back with no entries"
                                .into(),
                        ));
                    }
                    cookie = p.cookie;
                }
                _ => return Ok(n),
            }
        }
    }

    /// All entries of a subtree search.
    pub async fn search_all(
        &mut self,
        base: &str,
        filter: &str,
        attrs: &[String],
    ) -> Result<Vec<Entry>, LdapError> {
        let mut out = Vec::new();
        self.search_each(base, filter, attrs, |e| {
            out.push(e);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Reads one entry (base scope); `None` when it does not exist.
    pub async fn read(&mut self, dn: &str, attrs: &[String]) -> Result<Option<Entry>, LdapError> {
        let t = self.op_timeout;
        self.ldap.with_timeout(t);
        let res = bounded(
            "read",
            t,
            self.ldap
                .search(dn, Scope::Base, "(objectClass=*)", attrs.to_vec()),
        )
        .await?;
        if res.1.rc == 32 {
            return Ok(None);
        }
        check("read", res.1)?;
        res.0.into_iter().next().map(Entry::from_result).transpose()
    }

    /// Completes AD ranged attributes in place: `member;range=0-1499` is followed with
    /// base reads of the next windows until the server answers with a `*` end, and the values
    /// end up under the plain name (`member`).
    pub async fn complete_ranges(&mut self, e: &mut Entry, step: u32) -> Result<(), LdapError> {
        let ranged: Vec<String> = e
            .attrs
            .iter()
            .map(|(k, _)| k)
            .filter(|k| parse_ranged(k).is_some())
            .cloned()
            .collect();
        for key in ranged {
            let Some(r) = parse_ranged(&key) else {
                continue;
            };
            let mut values = e.take(&key).unwrap_or_default();
            let mut end = r.end;
            let mut guard = 0u32;
            while let Some(last) = end {
                guard += 1;
                if guard > 100_000 {
                    return Err(LdapError::Malformed(format!(
                        "{}: ranged retrieval does not terminate",
                        e.dn
                    )));
                }
                let start = last + 1;
                let want = format!("{};range={}-{}", r.name, start, start + step as u64 - 1);
                let next = self.read(&e.dn, std::slice::from_ref(&want)).await?;
                let Some(next) = next else {
                    return Err(LdapError::Malformed(format!(
                        "{} vanished during ranged retrieval",
                        e.dn
                    )));
                };
                let found = next.attrs.into_iter().find_map(|(k, v)| {
                    parse_ranged(&k)
                        .filter(|p| p.name.eq_ignore_ascii_case(&r.name))
                        .map(|p| (p, v))
                });
                match found {
                    Some((p, v)) => {
                        if p.start != start {
                            return Err(LdapError::Malformed(format!(
                                "{}: asked range {start}-, got {}-",
                                e.dn, p.start
                            )));
                        }
                        values.extend(v);
                        end = p.end;
                    }
                    // No value in the window: the previous chunk was the last one.
                    None => end = None,
                }
            }
            e.extend(r.name, values);
        }
        Ok(())
    }

    /// Root DSE attributes (AD `highestCommittedUSN`, supported controls).
    pub async fn root_dse(
        &mut self,
        attrs: &[&str],
    ) -> Result<HashMap<String, Vec<String>>, LdapError> {
        let attrs: Vec<String> = attrs.iter().map(|s| s.to_string()).collect();
        let e = self.read("", &attrs).await?;
        Ok(e.map(|e| e.attrs.into_iter().collect()).unwrap_or_default())
    }

    /// Unbinds politely (errors ignored: the connection is going away anyway).
    pub async fn close(mut self) {
        let t = self.op_timeout;
        let _ = tokio::time::timeout(t, self.ldap.unbind()).await;
    }
}
