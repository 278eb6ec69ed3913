//! The admin API for directories and roles, driven in-process through the full router: a
//! directory is created, its SCIM endpoint (mounted outside the API-key layer) accepts the token
//! shown once, rotation revokes it, roles and mappings recompute users' roles with events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use idbridge_api::{router, ApiConfig, AppState};
use idbridge_sso::api_keys as auth;
use idbridge_store::{SqliteStore, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

struct Api {
    app: Router,
    store: Arc<dyn Store>,
    key: String,
}

impl Api {
    fn new() -> Api {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_ephemeral().unwrap());
        let boot = auth::bootstrap(store.as_ref()).unwrap().unwrap();
        let config = ApiConfig {
            public_url: "https://sso.example.com".into(),
            ..ApiConfig::default()
        };
        let app = router(AppState::new(store.clone(), config));
        Api {
            app,
            store,
            key: boot.api_key,
        }
    }

    async fn call_as(
        &self,
        bearer: Option<&str>,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(b) = bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
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
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        (status, value)
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let key = self.key.clone();
        self.call_as(Some(&key), method, uri, body).await
    }

    async fn org(&self) -> String {
        let (s, v) = self
            .call("POST", "/organizations", Some(json!({"name": "Acme"})))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }

    fn kinds_after(&self, seq: u64) -> Vec<(String, Value)> {
        self.store
            .events_after(seq, 1000)
            .unwrap()
            .into_iter()
            .map(|e| {
                let v: Value = serde_json::from_slice(&e.body).unwrap();
                (e.kind, v["data"].clone())
            })
            .collect()
    }
}

fn path_of(endpoint: &str) -> String {
    endpoint
        .strip_prefix("https://sso.example.com")
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn directory_lifecycle_and_scim_through_the_full_router() {
    let api = Api::new();
    let org = api.org().await;

    // The admin endpoints require the API key.
    let (s, _) = api.call_as(None, "GET", "/admin/directories", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let (s, v) = api
        .call(
            "POST",
            "/admin/directories",
            Some(json!({"organization_id": org, "name": "Okta", "type": "okta scim v2.0"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let dir = v["directory"]["id"].as_str().unwrap().to_owned();
    assert_eq!(v["directory"]["object"], "directory");
    assert_eq!(v["directory"]["state"], "unlinked");
    assert_eq!(v["directory"]["organization_id"], org.as_str());
    let endpoint = v["scim"]["endpoint"].as_str().unwrap().to_owned();
    assert_eq!(endpoint, format!("https://sso.example.com/scim/v2/{dir}"));
    let token = v["scim"]["bearer_token"].as_str().unwrap().to_owned();
    assert!(token.len() >= 32);
    // The token is stored hashed only.
    let mut found_plain = false;
    api.store
        .export(&mut |r| {
            found_plain |= format!("{r:?}").contains(&token);
            Ok(())
        })
        .unwrap();
    assert!(!found_plain, "the SCIM token must not be stored in clear");

    // GET and list never show the token.
    let (s, v) = api
        .call("GET", &format!("/admin/directories/{dir}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["scim"]["endpoint"], endpoint.as_str());
    assert!(!v.to_string().contains(&token));
    let (s, v) = api
        .call(
            "GET",
            &format!("/admin/directories?organization_id={org}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"].as_array().map(Vec::len), Some(1));

    // SCIM with the token, outside the API-key layer (the API key itself is refused there).
    let scim = path_of(&endpoint);
    let user = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "ann@acme.test", "externalId": "okta-ann",
        "emails": [{"value": "ann@acme.test", "primary": true}], "active": true});
    let (s, v) = api
        .call_as(
            Some(&token),
            "POST",
            &format!("{scim}/Users"),
            Some(user.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let uid = v["id"].as_str().unwrap().to_owned();
    let key = api.key.clone();
    let (s, v) = api
        .call_as(Some(&key), "GET", &format!("{scim}/Users"), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(
        v["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:Error"
    );

    // Roles: PUT roles + mappings; a group named in a mapping gives its members the role.
    let (s, v) = api
        .call(
            "PUT",
            &format!("/admin/organizations/{org}/roles"),
            Some(json!({"roles": [
                {"slug": "member", "default": true, "priority": 10},
                {"slug": "admin", "name": "Admin", "priority": 1}]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["users_updated"], 1,
        "the default role reaches the existing user"
    );
    let (s, v) = api
        .call(
            "PUT",
            &format!("/admin/organizations/{org}/role_mappings"),
            Some(json!({"role_mappings": [{"idp_group": "Admins", "role_slug": "admin"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api
        .call(
            "PUT",
            &format!("/admin/organizations/{org}/role_mappings"),
            Some(json!({"role_mappings": [{"idp_group": "X", "role_slug": "nope"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = api
        .call(
            "GET",
            &format!("/admin/organizations/{org}/role_mappings"),
            None,
        )
        .await;
    assert_eq!(
        (s, v["data"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(1)),
        "{v}"
    );

    let seq = api.store.last_event_seq().unwrap();
    let group = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": "Admins", "members": [{"value": uid}]});
    let (s, v) = api
        .call_as(Some(&token), "POST", &format!("{scim}/Groups"), Some(group))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let ev = api.kinds_after(seq);
    let last = ev.last().unwrap();
    assert_eq!(last.0, "dsync.user.updated");
    assert_eq!(last.1["role"], json!({"slug": "admin"}));

    // Changing the mapping recomputes: the user falls back to the default role.
    let seq = api.store.last_event_seq().unwrap();
    let (s, v) = api
        .call(
            "PUT",
            &format!("/admin/organizations/{org}/role_mappings"),
            Some(json!({"role_mappings": []})),
        )
        .await;
    assert_eq!(
        (s, v["users_updated"].clone()),
        (StatusCode::OK, json!(1)),
        "{v}"
    );
    let ev = api.kinds_after(seq);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].1["role"], json!({"slug": "member"}));

    // Rotation: the old token stops working, the new one works.
    let (s, v) = api
        .call(
            "POST",
            &format!("/admin/directories/{dir}/scim_token"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let new_token = v["scim"]["bearer_token"].as_str().unwrap().to_owned();
    let (s, _) = api
        .call_as(Some(&token), "GET", &format!("{scim}/Users"), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = api
        .call_as(Some(&new_token), "GET", &format!("{scim}/Users"), None)
        .await;
    assert_eq!((s, v["totalResults"].clone()), (StatusCode::OK, json!(1)));

    // Delete: one dsync.deleted, then 404 everywhere.
    let seq = api.store.last_event_seq().unwrap();
    let (s, _) = api
        .call("DELETE", &format!("/admin/directories/{dir}"), None)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(
        api.kinds_after(seq)
            .into_iter()
            .map(|e| e.0)
            .collect::<Vec<_>>(),
        ["dsync.deleted"]
    );
    let (s, _) = api
        .call("GET", &format!("/admin/directories/{dir}"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api
        .call_as(Some(&new_token), "GET", &format!("{scim}/Users"), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_create_requests_are_workos_errors() {
    let api = Api::new();
    let org = api.org().await;
    let cases = [
        (
            json!({"organization_id": org, "name": "X", "type": "carrier pigeon"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"organization_id": org, "type": "okta scim v2.0"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"organization_id": org, "name": "X", "type": "okta scim v2.0", "settings": {"deactivation": "explode"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"organization_id": "org_01J00000000000000000000000", "name": "X", "type": "okta scim v2.0"}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"organization_id": "nonsense", "name": "X", "type": "okta scim v2.0"}),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (body, status) in cases {
        let (s, v) = api
            .call("POST", "/admin/directories", Some(body.clone()))
            .await;
        assert_eq!(s, status, "{body}: {v}");
        assert!(v["message"].is_string(), "{v}");
    }
    let (s, v) = api.call("GET", "/admin/directories", None).await;
    assert_eq!(
        (s, v["data"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
    // Non-SCIM directories have no token to rotate.
    let (s, v) = api
        .call(
            "POST",
            "/admin/directories",
            Some(json!({"organization_id": org, "name": "HR", "type": "sftp",
                "settings": {"deactivation": "keep_inactive"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(v["scim"].is_null());
    assert_eq!(v["settings"]["deactivation"], "keep_inactive");
    let dir = v["directory"]["id"].as_str().unwrap().to_owned();
    let (s, _) = api
        .call(
            "POST",
            &format!("/admin/directories/{dir}/scim_token"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn patch_renames_and_changes_settings_and_refuses_unknown_keys_at_any_depth() {
    let api = Api::new();
    let org = api.org().await;
    // An unknown key inside `settings` is refused on create too, by its full name.
    let (s, v) = api
        .call(
            "POST",
            "/admin/directories",
            Some(json!({"organization_id": org, "name": "HR", "type": "sftp",
                "settings": {"deactivation": "keep_inactive", "colour": "blue"}})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v.to_string().contains("settings.colour"), "{v}");
    let (s, v) = api
        .call(
            "POST",
            "/admin/directories",
            Some(json!({"organization_id": org, "name": "HR", "type": "sftp"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let dir = v["directory"]["id"].as_str().unwrap().to_owned();
    let uri = format!("/admin/directories/{dir}");
    let (_, before) = api.call("GET", &uri, None).await;

    // Refused, each naming its field, and nothing changes.
    for (body, field) in [
        (json!({"nme": "typo"}), "nme"),
        (
            json!({"settings": {"role_mod": "multiple"}}),
            "settings.role_mod",
        ),
        (
            json!({"settings": {"deactivation": "explode"}}),
            "settings.deactivation",
        ),
        (json!({"name": "   "}), "name"),
        (
            json!({"name": "ok", "settings": {"predefined_attributes": "yes"}}),
            "settings.predefined_attributes",
        ),
    ] {
        let (s, v) = api.call("PATCH", &uri, Some(body.clone())).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert!(v.to_string().contains(field), "{body}: {v}");
    }
    let (_, after) = api.call("GET", &uri, None).await;
    assert_eq!(before, after);

    // A partial settings change keeps the other keys.
    let (s, v) = api
        .call(
            "PATCH",
            &uri,
            Some(json!({"name": "HR (Workday)", "settings": {"deactivation": "keep_inactive"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["name"], "HR (Workday)");
    assert_eq!(v["settings"]["deactivation"], "keep_inactive");
    assert_eq!(v["settings"]["role_mode"], before["settings"]["role_mode"]);
    assert_eq!(
        v["settings"]["predefined_attributes"],
        before["settings"]["predefined_attributes"]
    );
    let (_, got) = api.call("GET", &uri, None).await;
    assert_eq!(got["name"], "HR (Workday)");
    assert_eq!(got["settings"]["deactivation"], "keep_inactive");

    // Unknown directory: WorkOS's 404.
    let (s, _) = api
        .call(
            "PATCH",
            "/admin/directories/directory_01J00000000000000000000000",
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn unknown_keys_inside_roles_and_role_mappings_are_refused_by_name() {
    let api = Api::new();
    let org = api.org().await;
    let roles = format!("/admin/organizations/{org}/roles");
    let maps = format!("/admin/organizations/{org}/role_mappings");
    let (_, roles_before) = api.call("GET", &roles, None).await;
    let (s, v) = api
        .call(
            "PUT",
            &roles,
            Some(json!({"roles": [{"slug": "member"}, {"slug": "admin", "permissions": ["all"]}]})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v.to_string().contains("roles[1].permissions"), "{v}");
    let (_, roles_after) = api.call("GET", &roles, None).await;
    assert_eq!(roles_before, roles_after);

    let (s, v) = api
        .call(
            "PUT",
            &roles,
            Some(json!({"roles": [{"slug": "member"}, {"slug": "admin"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, maps_before) = api.call("GET", &maps, None).await;
    for (body, field) in [
        (
            json!({"role_mappings": [{"idp_group": "Admins", "role_slug": "admin", "priority": 1}]}),
            "role_mappings[0].priority",
        ),
        (json!({"role_mappings": ["Admins"]}), "role_mappings[0]"),
    ] {
        let (s, v) = api.call("PUT", &maps, Some(body.clone())).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert!(v.to_string().contains(field), "{body}: {v}");
    }
    let (_, maps_after) = api.call("GET", &maps, None).await;
    assert_eq!(maps_before, maps_after);
}

/// The `organization_role.*` events of the organization, oldest first, as (event, slug).
async fn role_events(api: &Api, org: &str) -> Vec<(String, String)> {
    let (s, v) = api
        .call(
            "GET",
            &format!(
                "/events?events[]=organization_role.created&events[]=organization_role.updated&events[]=organization_role.deleted&organization_id={org}&limit=100"
            ),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["data"]["organization_id"], org, "{e}");
            (
                e["event"].as_str().unwrap().to_string(),
                e["data"]["slug"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn put_roles_is_one_change_with_an_event_per_role_created_changed_or_removed() {
    let api = Api::new();
    let org = api.org().await;
    let roles = format!("/admin/organizations/{org}/roles");
    let maps = format!("/admin/organizations/{org}/role_mappings");
    let (s, v) = api
        .call(
            "PUT",
            &roles,
            Some(json!({"roles": [
                {"slug": "member", "default": true},
                {"slug": "admin", "name": "Admin"},
                {"slug": "auditor"}
            ]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api
        .call(
            "PUT",
            &maps,
            Some(json!({"role_mappings": [
                {"idp_group": "Admins", "role_slug": "admin"},
                {"idp_group": "Audit", "role_slug": "auditor"}
            ]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let created = role_events(&api, &org).await;
    let mut slugs: Vec<&str> = created.iter().map(|(_, s)| s.as_str()).collect();
    slugs.sort_unstable();
    assert_eq!(slugs, ["admin", "auditor", "member"], "{created:?}");
    assert!(created
        .iter()
        .all(|(e, _)| e == "organization_role.created"));
    let (_, before) = api.call("GET", &roles, None).await;
    let member_before = before["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["slug"] == "member")
        .cloned()
        .unwrap();

    // member unchanged, admin renamed, auditor removed, viewer added.
    let (s, v) = api
        .call(
            "PUT",
            &roles,
            Some(json!({"roles": [
                {"slug": "member", "default": true, "priority": 0},
                {"slug": "admin", "name": "Administrator", "priority": 1},
                {"slug": "viewer", "priority": 2}
            ]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let all = role_events(&api, &org).await;
    let mut new: Vec<(String, String)> = all[created.len()..].to_vec();
    new.sort();
    assert_eq!(
        new,
        [
            (
                "organization_role.created".to_string(),
                "viewer".to_string()
            ),
            (
                "organization_role.deleted".to_string(),
                "auditor".to_string()
            ),
            ("organization_role.updated".to_string(), "admin".to_string()),
        ],
        "{all:?}"
    );
    // The unchanged role kept its timestamps; the removed role's mapping went with it.
    let (_, after) = api.call("GET", &roles, None).await;
    let member_after = after["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["slug"] == "member")
        .cloned()
        .unwrap();
    assert_eq!(member_before["updated_at"], member_after["updated_at"]);
    let (_, m) = api.call("GET", &maps, None).await;
    let groups: Vec<&str> = m["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["idp_group"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["Admins"], "{m}");

    // A refused body announces nothing and changes nothing.
    let (s, v) = api
        .call(
            "PUT",
            &roles,
            Some(json!({"roles": [{"slug": "member"}, {"slug": "member"}]})),
        )
        .await;
    assert!(s.is_client_error(), "{s} {v}");
    assert_eq!(role_events(&api, &org).await.len(), all.len());
    let (_, unchanged) = api.call("GET", &roles, None).await;
    assert_eq!(unchanged, after);
}
