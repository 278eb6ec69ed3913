//! A misbehaving LDAP server: malformed response controls and a paging loop that makes no
//! progress fail the search (and the run) with a clear error, never a panic, a hang or a
//! short read taken for the whole directory.
//!
//! No real server sends these, so the peer here is a scripted one on loopback: it answers a
//! bind with success and every search with what the test's `reply` returns.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::ber::{ber, cons, octets, prim, seq};
use common::Fx;
use idbridge_ldap::client::Client;
use idbridge_ldap::{
    ChangeTracking, Flavor, LdapError, LdapSettings, NoProgress, SyncError, SyncKind, Syncer,
};
use ldap3::asn1::{parse_tag, StructureTag, TagClass, Types, PL};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PAGED_OID: &[u8] = b"1.2.840.113556.1.4.319";

/// `LDAPResult` components with resultCode success.
fn success() -> Vec<StructureTag> {
    vec![
        prim(TagClass::Universal, Types::Enumerated as u64, &[0]),
        octets(b""),
        octets(b""),
    ]
}

/// A SearchResultEntry with a few inetOrgPerson attributes.
fn entry(uid: &str) -> StructureTag {
    let attr = |name: &str, value: &str| {
        seq(vec![
            octets(name.as_bytes()),
            cons(
                TagClass::Universal,
                Types::Set as u64,
                vec![octets(value.as_bytes())],
            ),
        ])
    };
    cons(
        TagClass::Application,
        4,
        vec![
            octets(format!("uid={uid},ou=People,dc=example,dc=com").as_bytes()),
            seq(vec![
                attr("objectClass", "inetOrgPerson"),
                attr("uid", uid),
                attr("entryUUID", "4f1c2a7e-8c1e-4a53-9a3e-0a1b2c3d4e5f"),
                attr("mail", &format!("{uid}@example.com")),
                attr("givenName", "Ann"),
                attr("sn", "Other"),
            ]),
        ],
    )
}

/// What the server sends for one search: protocol ops, and controls for the last one.
struct Reply {
    ops: Vec<StructureTag>,
    done_controls: Vec<StructureTag>,
}

/// A SearchResultDone carrying a Paged Results control with `value` as its raw value.
fn done_with_paged(value: Vec<u8>) -> Vec<StructureTag> {
    vec![seq(vec![octets(PAGED_OID), octets(&value)])]
}

/// The paged cookie of a search request's controls (empty when none).
fn request_cookie(controls: Option<&StructureTag>) -> Vec<u8> {
    let Some(StructureTag {
        payload: PL::C(list),
        ..
    }) = controls
    else {
        return Vec::new();
    };
    for c in list {
        let PL::C(parts) = &c.payload else { continue };
        let is_paged = matches!(parts.first(), Some(StructureTag { payload: PL::P(oid), .. }) if oid == PAGED_OID);
        let Some(StructureTag {
            payload: PL::P(value),
            ..
        }) = parts.last()
        else {
            continue;
        };
        if !is_paged {
            continue;
        }
        if let Ok((
            _,
            StructureTag {
                payload: PL::C(v), ..
            },
        )) = parse_tag(value)
        {
            if let Some(StructureTag {
                payload: PL::P(cookie),
                ..
            }) = v.get(1)
            {
                return cookie.clone();
            }
        }
    }
    Vec::new()
}

/// Serves LDAP on loopback until the test ends: binds succeed, a search gets `reply(base,
/// cookie)`. Returns the `ldap://` URL.
async fn scripted_server(reply: impl Fn(&[u8], &[u8]) -> Reply + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ldap://{}", listener.local_addr().expect("addr"));
    let reply = Arc::new(reply);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let msg = match parse_tag(&buf) {
                        Ok((rest, msg)) => {
                            let used = buf.len() - rest.len();
                            buf.drain(..used);
                            msg
                        }
                        Err(_) => match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                buf.extend_from_slice(&chunk[..n]);
                                continue;
                            }
                        },
                    };
                    let PL::C(parts) = msg.payload else { return };
                    let (Some(id), Some(op)) = (parts.first(), parts.get(1)) else {
                        return;
                    };
                    let id = id.clone();
                    let out: Vec<(StructureTag, Vec<StructureTag>)> = match op.id {
                        0 => vec![(cons(TagClass::Application, 1, success()), vec![])],
                        3 => {
                            let PL::C(req) = &op.payload else { return };
                            let base = match req.first() {
                                Some(StructureTag {
                                    payload: PL::P(b), ..
                                }) => b.clone(),
                                _ => return,
                            };
                            let r = reply(&base, &request_cookie(parts.get(2)));
                            let mut out: Vec<_> = r.ops.into_iter().map(|o| (o, vec![])).collect();
                            out.push((cons(TagClass::Application, 5, success()), r.done_controls));
                            out
                        }
                        // Unbind, abandon and anything else: end the connection.
                        _ => return,
                    };
                    for (op, controls) in out {
                        let mut msg = vec![id.clone(), op];
                        if !controls.is_empty() {
                            msg.push(cons(TagClass::Context, 0, controls));
                        }
                        if sock.write_all(&ber(seq(msg))).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    url
}

fn settings(url: String) -> LdapSettings {
    let mut s = LdapSettings::new(url, Flavor::Openldap, "ou=People,dc=example,dc=com");
    s.allow_plain = true;
    s.change_tracking = Some(ChangeTracking::Timestamp);
    s.group_base_dns = vec![];
    s.page_size = 2;
    s.timeouts.connect_secs = 3;
    s.timeouts.operation_secs = 5;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_paged_results_controls_fail_the_search() {
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("not BER", vec![0xff, 0x01]),
        (
            "negative size",
            ber(seq(vec![
                prim(TagClass::Universal, 2, &[0xff]),
                octets(b"c"),
            ])),
        ),
        (
            "no cookie",
            ber(seq(vec![prim(TagClass::Universal, 2, &[1])])),
        ),
        ("empty", vec![]),
    ];
    for (name, value) in garbage {
        let url = scripted_server(move |_, _| Reply {
            ops: vec![entry("ann")],
            done_controls: done_with_paged(value.clone()),
        })
        .await;
        let mut client = Client::connect(&settings(url)).await.expect("connect");
        let mut seen = 0;
        let err = client
            .search_each("ou=People,dc=example,dc=com", "(uid=*)", &[], |_| {
                seen += 1;
                Ok(())
            })
            .await
            .expect_err(name);
        assert!(
            matches!(&err, LdapError::Malformed(m) if m.contains("Paged Results")),
            "{name}: {err:?}"
        );
        assert_eq!(seen, 1, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paging_cookie_repeated_without_entries_is_an_error_not_a_loop() {
    let page = |cookie: &[u8]| {
        ber(seq(vec![
            prim(TagClass::Universal, 2, &[0]),
            octets(cookie),
        ]))
    };
    // First page: one entry and cookie "c1"; from then on no entry and "c1" again.
    let url = scripted_server(move |_, cookie| Reply {
        ops: if cookie.is_empty() {
            vec![entry("ann")]
        } else {
            vec![]
        },
        done_controls: done_with_paged(page(b"c1")),
    })
    .await;
    let mut client = Client::connect(&settings(url)).await.expect("connect");
    let err = client
        .search_each("ou=People,dc=example,dc=com", "(uid=*)", &[], |_| Ok(()))
        .await
        .expect_err("no progress");
    assert!(
        matches!(&err, LdapError::Malformed(m) if m.contains("same cookie")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_against_a_malformed_server_fails_and_changes_nothing() {
    let url = scripted_server(|base, _| Reply {
        ops: if base.is_empty() {
            vec![]
        } else {
            vec![entry("ann")]
        },
        done_controls: done_with_paged(vec![0x30, 0x03, 0x02, 0x01]),
    })
    .await;
    let fx = Fx::new();
    let src = fx.ldap_dir(settings(url));
    let dir = src.directory_id.clone();
    let syncer = Syncer::new(fx.engine.clone());
    let before = fx.rows();
    let seq = fx.last_seq();
    let err = syncer
        .run(&src, SyncKind::Full, Arc::new(NoProgress))
        .await
        .expect_err("malformed server");
    assert!(
        matches!(&err, SyncError::Ldap(LdapError::Malformed(m)) if m.contains("Paged Results")),
        "{err:?}"
    );
    assert!(fx.users(&dir).is_empty());
    assert_eq!(fx.kinds_after(seq), Vec::<String>::new());
    let state = syncer.state(&dir).expect("state");
    assert_eq!(state.last_full.as_ref().map(|r| r.ok), Some(false));
    // Nothing but the sync state (which records the failure) changed.
    assert_eq!(fx.rows(), before);
}
