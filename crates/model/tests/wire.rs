//! Round-trips of the JSON examples in shared/workos-api.md: every example must deserialize into
//! our types and serialize back to the same JSON (same keys, same values, nothing dropped).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use idbridge_model::*;
use serde_json::{json, Value};

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(example: Value) {
    let parsed: T = serde_json::from_value(example.clone()).expect("example parses");
    let back = serde_json::to_value(&parsed).expect("serializes");
    assert_eq!(back, example, "round trip changed the JSON");
}

#[test]
fn organization_example() {
    // The doc example carries `"stripe_customer_id": null`; the OpenAPI spec types the key as an
    // optional string, so an unset value is omitted and must still parse from `null`.
    let example = json!({
        "object":"organization","id":"org_01EHWNCE74X7JSDV0X3SZ3KJNY","name":"Acme Inc.",
        "domains":[{"object":"organization_domain","id":"org_domain_01EHWNFTAFCF3CQAE5A9Q0P1YB",
            "organization_id":"org_01EHWNCE74X7JSDV0X3SZ3KJNY","domain":"foo-corp.com",
            "state":"verified","verification_strategy":"manual","verification_token":null,
            "verification_prefix":null,"created_at":"2021-06-25T19:07:33.155Z",
            "updated_at":"2021-06-25T19:07:33.155Z"}],
        "metadata":{},"external_id":null,"stripe_customer_id":null,
        "allow_profiles_outside_organization":false,"created_at":"2021-06-25T19:07:33.155Z",
        "updated_at":"2021-06-25T19:07:33.155Z"
    });
    let parsed: Organization = serde_json::from_value(example.clone()).expect("example parses");
    // Likewise the domain's unset `verification_token` / `verification_prefix`.
    let mut expected = example;
    expected
        .as_object_mut()
        .expect("object")
        .remove("stripe_customer_id");
    let domain = expected["domains"][0].as_object_mut().expect("domain");
    domain.remove("verification_token");
    domain.remove("verification_prefix");
    assert_eq!(serde_json::to_value(&parsed).expect("serializes"), expected);
    let with_stripe: Organization = serde_json::from_value(json!({
        "object":"organization","id":"org_01EHWNCE74X7JSDV0X3SZ3KJNY","name":"Acme Inc.",
        "domains":[],"metadata":{},"external_id":null,"stripe_customer_id":"cus_R9qWAGMQ6nGE7V",
        "allow_profiles_outside_organization":false,"created_at":"2021-06-25T19:07:33.155Z",
        "updated_at":"2021-06-25T19:07:33.155Z"
    }))
    .expect("parses");
    round_trip::<Organization>(serde_json::to_value(with_stripe).expect("serializes"));
}

#[test]
fn profile_example() {
    round_trip::<Profile>(json!({
        "object":"profile","id":"prof_01DMC79VCBZ0NY2099737PSVF1",
        "idp_id":"00u1a0ufowBJlzPlk357","organization_id":"org_01EHWNCE74X7JSDV0X3SZ3KJNY",
        "connection_id":"conn_01E4ZCR3C56J083X43JQXF3JK5","connection_type":"OktaSAML",
        "email":"todd@example.com","first_name":"Todd","last_name":"Rundgren","name":"Todd Rundgren",
        "role":{"slug":"engineer"},"roles":[{"slug":"engineer"}],"groups":["Engineering"],
        "custom_attributes":{},"raw_attributes":{}
    }));
}

#[test]
fn connection_example() {
    round_trip::<Connection>(json!({
        "object":"connection","id":"conn_01E4ZCR3C56J083X43JQXF3JK5",
        "organization_id":"org_01EHWNCE74X7JSDV0X3SZ3KJNY","connection_type":"OktaSAML",
        "name":"Foo Corp","state":"active","status":"linked",
        "domains":[{"object":"connection_domain","id":"org_domain_01EHWNFTAFCF3CQAE5A9Q0P1YB","domain":"foo-corp.com"}],
        "options":{"signing_cert":null},"created_at":"2021-06-25T19:07:33.155Z",
        "updated_at":"2021-06-25T19:07:33.155Z"
    }));
}

#[test]
fn directory_example() {
    round_trip::<Directory>(json!({
        "object":"directory","id":"directory_01ECAZ4NV9QMV47GW873HDCX74",
        "organization_id":"org_01EHWNCE74X7JSDV0X3SZ3KJNY","external_key":"sPa12dwRQ",
        "type":"generic scim v2.0","state":"linked","name":"Foo Corp","domain":"foo-corp.com",
        "metadata":{"users":{"active":42,"inactive":3},"groups":5},
        "created_at":"2021-06-25T19:07:33.155Z","updated_at":"2021-06-25T19:07:33.155Z"
    }));
}

fn user_json() -> Value {
    json!({
        "object":"directory_user","id":"directory_user_01E1JG7J09H96KYP8HM9B0G5SJ",
        "directory_id":"directory_01ECAZ4NV9QMV47GW873HDCX74",
        "organization_id":"org_01EHWNCE74X7JSDV0X3SZ3KJNY","idp_id":"2836",
        "email":"marcelina@foo-corp.com","first_name":"Marcelina","last_name":"Davis",
        "name":"Marcelina Davis",
        "emails":[{"primary":true,"type":"work","value":"marcelina@foo-corp.com"}],
        "username":"marcelina@foo-corp.com","job_title":"Software Engineer","state":"active",
        "custom_attributes":{"department":"Engineering"},
        "raw_attributes":{"userName":"marcelina@foo-corp.com"},
        "role":{"slug":"member"},"roles":[{"slug":"member"}],
        "created_at":"2021-06-25T19:07:33.155Z","updated_at":"2021-06-25T19:07:33.155Z"
    })
}

fn group_json() -> Value {
    json!({
        "object":"directory_group","id":"directory_group_01E1JJS84MFPPQ3G655FHTKX6Z",
        "idp_id":"02grqrue4294w24","directory_id":"directory_01ECAZ4NV9QMV47GW873HDCX74",
        "organization_id":"org_01EHWNCE74X7JSDV0X3SZ3KJNY","name":"Developers",
        "raw_attributes":{},"created_at":"2021-06-25T19:07:33.155Z",
        "updated_at":"2021-06-25T19:07:33.155Z"
    })
}

#[test]
fn directory_user_and_group_examples() {
    round_trip::<DirectoryUser>(user_json());
    round_trip::<DirectoryGroup>(group_json());
    let mut with_groups = user_json();
    with_groups["groups"] = json!([group_json()]);
    round_trip::<DirectoryUserWithGroups>(with_groups);
}

#[test]
fn event_and_list_examples() {
    round_trip::<Event>(json!({
        "object":"event","id":"event_01EHZNVPK3SFK441A1RGBFSHRT","event":"dsync.group.created",
        "data": group_json(), "created_at":"2021-06-25T19:07:33.155Z"
    }));
    round_trip::<List<DirectoryGroup>>(json!({
        "object":"list","data":[group_json()],
        "list_metadata":{"before":null,"after":"directory_group_01E1JJS84MFPPQ3G655FHTKX6Z"}
    }));
    round_trip::<EventsList<Value>>(json!({
        "object":"list","data":[],"list_metadata":{"after":null}
    }));
}

#[test]
fn empty_values_keep_their_keys() {
    // The Python SDK indexes required keys directly: nulls and empties must still be emitted.
    let mut user: DirectoryUser = serde_json::from_value(user_json()).unwrap();
    user.email = None;
    user.emails.clear();
    user.role = None;
    user.custom_attributes.clear();
    let v = serde_json::to_value(&user).unwrap();
    for key in [
        "email",
        "emails",
        "custom_attributes",
        "raw_attributes",
        "name",
    ] {
        assert!(v.get(key).is_some(), "key {key} missing");
    }
    assert_eq!(v["emails"], json!([]));
    assert_eq!(v["email"], Value::Null);
    // Except where the OpenAPI schema forbids null (`role` is an object, `roles` an array):
    // those are omitted, which every SDK reads as "no role".
    user.roles = None;
    let v = serde_json::to_value(&user).unwrap();
    assert!(v.get("role").is_none() && v.get("roles").is_none(), "{v}");
}

#[test]
fn wrong_object_tag_is_rejected() {
    let mut g = group_json();
    g["object"] = json!("directory_user");
    assert!(serde_json::from_value::<DirectoryGroup>(g).is_err());
}

#[test]
fn event_body_is_compact_like_json_stringify() {
    let e = Event::new(
        idbridge_model::EventKind::DsyncUserCreated,
        json!({"url": "https://a/b", "name": "Zoë"}),
    );
    let body = String::from_utf8(e.to_compact_json()).unwrap();
    assert!(body.starts_with("{\"object\":\"event\",\"id\":\"event_"));
    assert!(
        body.contains("\"url\":\"https://a/b\""),
        "no escaped slash: {body}"
    );
    assert!(body.contains("Zoë"), "no escaped non-ASCII: {body}");
    assert!(!body.contains(": ") && !body.contains(", "));
}
