//! The Directory Sync read API driven in-process: directories, users and groups fed through the
//! directory engine the router itself uses, then read back with every filter, paged in both
//! directions and both orders, with the WorkOS 404/422 shapes and tenancy between directories.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use idbridge_api::{router, ApiConfig, AppState};
use idbridge_directory::{DirectoryEngine, DirectorySettings, GroupInput, UserInput};
use idbridge_sso::api_keys as auth;
use idbridge_store::{SqliteStore, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

struct Api {
    app: Router,
    store: Arc<dyn Store>,
    engine: Arc<DirectoryEngine>,
    key: String,
}

impl Api {
    fn new() -> Api {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_ephemeral().unwrap());
        let boot = auth::bootstrap(store.as_ref()).unwrap().unwrap();
        let state = AppState::new(store.clone(), ApiConfig::default());
        let engine = state.directory.clone();
        Api {
            app: router(state),
            store,
            engine,
            key: boot.api_key,
        }
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {}", self.key));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(
                body.map(|b| Body::from(b.to_string()))
                    .unwrap_or(Body::empty()),
            )
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        assert!(resp.headers().contains_key("x-request-id"));
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        (status, value)
    }

    async fn get_ok(&self, uri: &str) -> Value {
        let (s, v) = self.call("GET", uri, None).await;
        assert_eq!(s, StatusCode::OK, "GET {uri}: {v}");
        v
    }

    async fn org(&self, name: &str, domain: &str) -> String {
        let (s, v) = self
            .call(
                "POST",
                "/organizations",
                Some(
                    json!({"name": name, "domain_data": [{"domain": domain, "state": "verified"}]}),
                ),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    fn directory(&self, org: &str, name: &str) -> String {
        let (rec, _token) = self
            .engine
            .create_directory(org, name, "generic scim v2.0", DirectorySettings::default())
            .unwrap();
        rec.directory.id
    }

    fn user(&self, dir: &str, idp: &str, email: &str) -> String {
        let source = json!({"externalId": idp, "userName": email, "active": true});
        let input = UserInput {
            idp_id: idp.into(),
            email: Some(email.into()),
            first_name: Some(format!("First {idp}")),
            last_name: Some("Doe".into()),
            name: Some(format!("First {idp} Doe")),
            emails: vec![idbridge_model::DirectoryUserEmail {
                primary: true,
                email_type: Some("work".into()),
                value: Some(email.into()),
            }],
            username: Some(email.into()),
            job_title: None,
            active: true,
            raw_attributes: source.as_object().cloned().unwrap_or_default(),
            source,
            unique_keys: vec![("scim.userName".into(), email.to_lowercase())],
        };
        self.engine
            .upsert_user(dir, None, input, None)
            .unwrap()
            .user
            .user
            .id
    }

    fn group(&self, dir: &str, idp: &str, name: &str, members: &[String]) -> String {
        let source = json!({"externalId": idp, "displayName": name});
        let input = GroupInput {
            idp_id: idp.into(),
            name: name.into(),
            raw_attributes: source.as_object().cloned().unwrap_or_default(),
            source,
            unique_keys: vec![("scim.displayName".into(), name.to_lowercase())],
        };
        let id = self
            .engine
            .upsert_group(dir, None, input, None)
            .unwrap()
            .group
            .group
            .id;
        self.engine
            .set_group_members(dir, &id, members.to_vec())
            .unwrap();
        id
    }

    fn event_kinds(&self) -> Vec<String> {
        self.store
            .events_after(0, 100_000)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    /// Follows `after` from the first page to the end; checks page sizes and cursors.
    async fn walk(&self, base: &str, limit: usize, order: &str) -> Vec<String> {
        let sep = if base.contains('?') { '&' } else { '?' };
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for page_no in 0..1000 {
            let mut uri = format!("{base}{sep}limit={limit}&order={order}");
            if let Some(a) = &after {
                uri.push_str(&format!("&after={a}"));
            }
            let page = self.get_ok(&uri).await;
            assert_eq!(page["object"], "list");
            let data = page["data"].as_array().unwrap();
            assert!(data.len() <= limit, "{uri}: page of {}", data.len());
            if page_no == 0 {
                assert_eq!(page["list_metadata"]["before"], Value::Null, "{uri}");
            } else {
                assert_eq!(page["list_metadata"]["before"], data[0]["id"], "{uri}");
            }
            out.extend(data.iter().map(|o| o["id"].as_str().unwrap().to_string()));
            match page["list_metadata"]["after"].as_str() {
                Some(a) => {
                    assert_eq!(data.len(), limit, "only the last page is short: {uri}");
                    assert_eq!(Some(a), data.last().unwrap()["id"].as_str());
                    after = Some(a.to_string());
                }
                None => return out,
            }
        }
        panic!("pagination did not end: {base}");
    }

    /// Follows `before` from `start` back to the beginning; returns ids in list order.
    async fn walk_back(&self, base: &str, limit: usize, order: &str, start: &str) -> Vec<String> {
        let sep = if base.contains('?') { '&' } else { '?' };
        let mut pages: Vec<Vec<String>> = Vec::new();
        let mut before = start.to_string();
        for _ in 0..1000 {
            let uri = format!("{base}{sep}limit={limit}&order={order}&before={before}");
            let page = self.get_ok(&uri).await;
            let ids: Vec<String> = page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(page["list_metadata"]["after"], json!(ids.last()), "{uri}");
            pages.push(ids);
            match page["list_metadata"]["before"].as_str() {
                Some(b) => before = b.to_string(),
                None => break,
            }
        }
        pages.reverse();
        pages.concat()
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect()
}

fn reversed(v: &[String]) -> Vec<String> {
    v.iter().rev().cloned().collect()
}

async fn expect_error(api: &Api, uri: &str, status: StatusCode, code: &str) -> Value {
    let (s, v) = api.call("GET", uri, None).await;
    assert_eq!(s, status, "GET {uri}: {v}");
    assert_eq!(v["code"], code, "GET {uri}: {v}");
    assert!(v["message"].is_string(), "{v}");
    v
}

#[tokio::test]
async fn directories_list_filter_get_and_delete() {
    let api = Api::new();
    let acme = api.org("Acme", "acme.test").await;
    let beta = api.org("Beta", "beta.test").await;
    let okta = api.directory(&acme, "Acme Okta Prod");
    let azure = api.directory(&acme, "Acme Azure");
    let beta_dir = api.directory(&beta, "Beta OKTA staging");
    let extra: Vec<String> = (0..4)
        .map(|i| api.directory(&beta, &format!("Beta extra {i}")))
        .collect();
    let mut all = vec![okta.clone(), azure.clone(), beta_dir.clone()];
    all.extend(extra.iter().cloned());

    // A fresh directory: REST vocabulary, every key the SDKs read, zero counts.
    let d = api.get_ok(&format!("/directories/{okta}")).await;
    assert_eq!(d["object"], "directory");
    assert_eq!(d["state"], "unlinked");
    assert_eq!(d["type"], "generic scim v2.0");
    assert_eq!(d["organization_id"], acme.as_str());
    assert_eq!(d["domain"], "acme.test");
    assert!(d["external_key"].as_str().is_some_and(|k| !k.is_empty()));
    assert_eq!(
        d["metadata"],
        json!({"users": {"active": 0, "inactive": 0}, "groups": 0})
    );
    for key in ["created_at", "updated_at", "name", "id"] {
        assert!(d[key].is_string(), "{key} in {d}");
    }
    assert!(
        d.get("settings").is_none() && d.get("scim_token_digest").is_none(),
        "{d}"
    );

    // The first change links it; counts follow.
    let u = api.user(&okta, "u-1", "one@acme.test");
    api.group(&okta, "g-1", "Engineering", std::slice::from_ref(&u));
    let d = api.get_ok(&format!("/directories/{okta}")).await;
    assert_eq!(d["state"], "linked");
    assert_eq!(
        d["metadata"],
        json!({"users": {"active": 1, "inactive": 0}, "groups": 1})
    );

    // All, both orders, several pages, both cursor directions.
    let desc = api.walk("/directories", 2, "desc").await;
    assert_eq!(desc, reversed(&all));
    assert_eq!(api.walk("/directories", 3, "asc").await, all);
    assert_eq!(
        api.walk_back("/directories", 2, "desc", &desc[6]).await,
        desc[..6].to_vec()
    );
    assert_eq!(
        api.walk_back("/directories", 2, "asc", &all[5]).await,
        all[..5].to_vec()
    );
    // Default order is desc, default limit 10.
    assert_eq!(ids(&api.get_ok("/directories").await), desc);

    // Filters.
    let page = api
        .get_ok(&format!("/directories?organization_id={acme}"))
        .await;
    assert_eq!(ids(&page), [azure.clone(), okta.clone()]);
    assert_eq!(
        api.walk(&format!("/directories?organization_id={beta}"), 2, "asc")
            .await,
        all[2..].to_vec()
    );
    let page = api.get_ok("/directories?search=okta").await;
    assert_eq!(ids(&page), [beta_dir.clone(), okta.clone()]);
    let page = api
        .get_ok(&format!("/directories?search=OKTA&organization_id={acme}"))
        .await;
    assert_eq!(ids(&page), vec![okta.clone()]);
    let page = api.get_ok("/directories?domain=BETA.test&limit=100").await;
    assert_eq!(ids(&page), reversed(&all[2..]));
    for uri in [
        "/directories?organization_id=org_01ARZ3NDEKTSV4RRFFQ69G5FAV".to_string(),
        "/directories?organization_id=nonsense".to_string(),
        "/directories?search=nobody".to_string(),
    ] {
        let page = api.get_ok(&uri).await;
        assert_eq!(page["data"], json!([]), "{uri}");
        assert_eq!(
            page["list_metadata"],
            json!({"before": null, "after": null})
        );
    }

    // Errors.
    for uri in [
        "/directories/directory_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "/directories/not-an-id",
        "/directories/directory_user_01ARZ3NDEKTSV4RRFFQ69G5FAV",
    ] {
        let v = expect_error(&api, uri, StatusCode::NOT_FOUND, "entity_not_found").await;
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .starts_with("Directory not found: '"),
            "{v}"
        );
    }
    for uri in [
        "/directories?limit=0",
        "/directories?limit=101",
        "/directories?order=up",
        "/directories?after=org_01ARZ3NDEKTSV4RRFFQ69G5FAV",
    ] {
        let v = expect_error(
            &api,
            uri,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters",
        )
        .await;
        assert!(v["errors"].as_array().is_some_and(|e| !e.is_empty()), "{v}");
    }

    // Delete: 202, empty body, exactly one dsync.deleted and nothing else.
    let before = api.event_kinds().len();
    let (s, body) = api
        .call("DELETE", &format!("/directories/{okta}"), None)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(body, Value::Null);
    assert_eq!(api.event_kinds()[before..], ["dsync.deleted"]);
    let events = api.store.events_after(0, 100_000).unwrap();
    let deleted: Value = serde_json::from_slice(&events.last().unwrap().body).unwrap();
    assert_eq!(deleted["data"]["id"], okta.as_str());
    assert_eq!(deleted["data"]["state"], "active", "events vocabulary");
    expect_error(
        &api,
        &format!("/directories/{okta}"),
        StatusCode::NOT_FOUND,
        "entity_not_found",
    )
    .await;
    expect_error(
        &api,
        &format!("/directory_users/{u}"),
        StatusCode::NOT_FOUND,
        "entity_not_found",
    )
    .await;
    expect_error(
        &api,
        &format!("/directory_users?directory={okta}"),
        StatusCode::NOT_FOUND,
        "entity_not_found",
    )
    .await;
    let (s, _) = api
        .call("DELETE", &format!("/directories/{okta}"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        api.event_kinds().len(),
        before + 1,
        "a second delete emits nothing"
    );
    assert!(!ids(&api.get_ok("/directories?limit=100").await).contains(&okta));
}

#[tokio::test]
async fn users_and_groups_with_every_filter_and_tenancy() {
    let api = Api::new();
    let org = api.org("Acme", "acme.test").await;
    let dir = api.directory(&org, "Main");
    let other = api.directory(&org, "Other");
    let users: Vec<String> = (0..25)
        .map(|i| {
            api.user(
                &dir,
                &format!("idp-{i:02}"),
                &format!("User{i:02}@Acme.test"),
            )
        })
        .collect();
    let foreign = api.user(&other, "idp-00", "user00@acme.test");
    let eng = api.group(&dir, "g-eng", "Engineering", &users[..13]);
    let ops = api.group(&dir, "g-ops", "Ops", &users[5..9]);
    let empty = api.group(&dir, "g-empty", "Empty", &[]);
    let foreign_group = api.group(
        &other,
        "g-eng",
        "Engineering",
        std::slice::from_ref(&foreign),
    );
    let groups = vec![eng.clone(), ops.clone(), empty.clone()];

    // Users of a directory, several pages each way.
    let base = format!("/directory_users?directory={dir}");
    let desc = api.walk(&base, 4, "desc").await;
    assert_eq!(desc, reversed(&users));
    assert_eq!(api.walk(&base, 7, "asc").await, users);
    assert_eq!(api.walk_back(&base, 4, "desc", &desc[20]).await, desc[..20]);
    assert_eq!(
        api.walk_back(&base, 3, "asc", &users[11]).await,
        users[..11]
    );
    assert_eq!(
        api.walk(&format!("{base}&order=normal"), 10, "desc").await,
        desc
    );

    // Each user comes with its groups; the list and the get agree.
    let page = api.get_ok(&format!("{base}&limit=100&order=asc")).await;
    let u6 = &page["data"][6];
    assert_eq!(u6["object"], "directory_user");
    assert_eq!(u6["idp_id"], "idp-06");
    assert_eq!(u6["directory_id"], dir.as_str());
    assert_eq!(u6["organization_id"], org.as_str());
    assert_eq!(u6["state"], "active");
    assert_eq!(u6["email"], "User06@Acme.test");
    for key in ["custom_attributes", "raw_attributes"] {
        assert!(u6[key].is_object(), "{key}: {u6}");
    }
    assert!(u6["emails"].is_array());
    let u6_groups: Vec<&str> = u6["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(u6_groups, [eng.as_str(), ops.as_str()]);
    assert_eq!(page["data"][20]["groups"], json!([]));
    let got = api.get_ok(&format!("/directory_users/{}", users[6])).await;
    assert_eq!(&got, u6);
    assert_eq!(got["groups"][1]["object"], "directory_group");
    assert_eq!(got["groups"][1]["name"], "Ops");

    // By group, with or without the directory.
    let eng_users = users[..13].to_vec();
    assert_eq!(
        api.walk(&format!("/directory_users?group={eng}"), 5, "asc")
            .await,
        eng_users
    );
    assert_eq!(
        api.walk(
            &format!("/directory_users?directory={dir}&group={eng}"),
            5,
            "desc"
        )
        .await,
        reversed(&eng_users)
    );
    assert_eq!(
        api.walk_back(
            &format!("/directory_users?group={eng}"),
            5,
            "asc",
            &users[12]
        )
        .await,
        users[..12]
    );
    assert_eq!(
        ids(&api.get_ok(&format!("/directory_users?group={ops}")).await),
        reversed(&users[5..9])
    );
    assert_eq!(
        api.get_ok(&format!("/directory_users?group={empty}")).await["data"],
        json!([])
    );

    // idp_id and email (case-insensitive), alone, together and with a group.
    let one = |v: Value| ids(&v);
    assert_eq!(
        one(api.get_ok(&format!("{base}&idp_id=idp-03")).await),
        vec![users[3].clone()]
    );
    assert_eq!(
        one(api.get_ok(&format!("{base}&email=user03@acme.TEST")).await),
        vec![users[3].clone()]
    );
    assert_eq!(
        one(api
            .get_ok(&format!("{base}&email=user03@acme.test&idp_id=idp-03"))
            .await),
        vec![users[3].clone()]
    );
    assert!(one(api
        .get_ok(&format!("{base}&email=user04@acme.test&idp_id=idp-03"))
        .await)
    .is_empty());
    assert!(one(api
        .get_ok(&format!("{base}&group={ops}&idp_id=idp-03"))
        .await)
    .is_empty());
    assert_eq!(
        one(api
            .get_ok(&format!("{base}&group={ops}&email=user07@acme.test"))
            .await),
        vec![users[7].clone()]
    );
    assert!(one(api.get_ok(&format!("{base}&idp_id=nobody")).await).is_empty());
    assert!(one(api.get_ok(&format!("{base}&email=nobody@acme.test")).await).is_empty());
    // The same idp_id in another directory is another user.
    assert_eq!(
        one(api
            .get_ok(&format!("/directory_users?directory={other}&idp_id=idp-00"))
            .await),
        vec![foreign.clone()]
    );

    // Groups of a directory and of a user.
    let gbase = format!("/directory_groups?directory={dir}");
    assert_eq!(api.walk(&gbase, 2, "asc").await, groups);
    assert_eq!(api.walk(&gbase, 1, "desc").await, reversed(&groups));
    assert_eq!(api.walk_back(&gbase, 1, "asc", &empty).await, groups[..2]);
    assert_eq!(
        ids(&api
            .get_ok(&format!("/directory_groups?user={}", users[6]))
            .await),
        [ops.clone(), eng.clone()]
    );
    assert_eq!(
        ids(&api
            .get_ok(&format!(
                "/directory_groups?user={}&directory={dir}&order=asc",
                users[6]
            ))
            .await),
        [eng.clone(), ops.clone()]
    );
    assert_eq!(
        api.get_ok(&format!("/directory_groups?user={}", users[20]))
            .await["data"],
        json!([])
    );
    let g = api.get_ok(&format!("/directory_groups/{ops}")).await;
    assert_eq!(g["object"], "directory_group");
    assert_eq!(g["name"], "Ops");
    assert_eq!(g["idp_id"], "g-ops");
    assert_eq!(g["directory_id"], dir.as_str());
    assert_eq!(g["organization_id"], org.as_str());
    assert!(g["raw_attributes"].is_object());

    // Required filters: 422 in the WorkOS validation shape.
    for (uri, field) in [
        ("/directory_users".to_string(), "directory"),
        ("/directory_users?limit=5".to_string(), "directory"),
        (
            format!("/directory_users?group={eng}&idp_id=idp-01"),
            "idp_id",
        ),
        ("/directory_users?email=a@b.c".to_string(), "email"),
        ("/directory_groups".to_string(), "directory"),
        (format!("{base}&limit=500"), "limit"),
        (format!("{base}&after={eng}"), "after"),
        (format!("{gbase}&before={}", users[0]), "before"),
    ] {
        let v = expect_error(
            &api,
            &uri,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters",
        )
        .await;
        assert_eq!(v["message"], "Validation failed.");
        let fields: HashSet<&str> = v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(field), "{uri}: {v}");
    }

    // Unknown or foreign ids: 404 entity_not_found, never another directory's data.
    let unknown_user = "directory_user_01ARZ3NDEKTSV4RRFFQ69G5FAV";
    let unknown_group = "directory_group_01ARZ3NDEKTSV4RRFFQ69G5FAV";
    let unknown_dir = "directory_01ARZ3NDEKTSV4RRFFQ69G5FAV";
    for uri in [
        format!("/directory_users/{unknown_user}"),
        format!("/directory_users/{eng}"),
        "/directory_users/garbage".to_string(),
        format!("/directory_groups/{unknown_group}"),
        format!("/directory_groups/{}", users[0]),
        format!("/directory_users?directory={unknown_dir}"),
        "/directory_users?directory=garbage".to_string(),
        format!("/directory_users?group={unknown_group}"),
        format!("/directory_users?directory={dir}&group={foreign_group}"),
        format!("/directory_users?directory={other}&group={eng}&email=user01@acme.test"),
        format!("/directory_users?directory={unknown_dir}&idp_id=idp-01"),
        format!("/directory_groups?directory={unknown_dir}"),
        format!("/directory_groups?user={unknown_user}"),
        format!("/directory_groups?user={foreign}&directory={dir}"),
    ] {
        expect_error(&api, &uri, StatusCode::NOT_FOUND, "entity_not_found").await;
    }
    // The other directory sees only its own.
    assert_eq!(
        ids(&api
            .get_ok(&format!("/directory_users?directory={other}"))
            .await),
        vec![foreign.clone()]
    );
    assert_eq!(
        ids(&api
            .get_ok(&format!("/directory_groups?directory={other}"))
            .await),
        vec![foreign_group.clone()]
    );

    // Without the API key nothing is readable.
    let req = Request::builder()
        .uri(format!("/directory_users?directory={dir}"))
        .body(Body::empty())
        .unwrap();
    let resp = api.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}
