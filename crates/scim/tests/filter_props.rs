//! Property tests: the filter and path parsers never panic on arbitrary input, and printing a
//! filter then parsing it gives back the same tree.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::Number;

use idbridge_scim::filter::{
    parse_filter, parse_path, AttrPath, CompValue, CompareOp, Filter, MAX_FILTER_LEN,
};
use idbridge_scim::schema::{ResourceSchema, ENTERPRISE_USER_SCHEMA, USER_SCHEMA};

fn attr_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z][a-zA-Z0-9_-]{0,8}",
        // Words that are also keywords must still work as attribute names.
        Just("not".to_string()),
        Just("and".to_string()),
        Just("pr".to_string()),
        Just("$ref".to_string()),
    ]
}

fn attr_path(allow_sub: bool) -> impl Strategy<Value = AttrPath> {
    let urn = prop_oneof![
        3 => Just(None),
        1 => Just(Some(ENTERPRISE_USER_SCHEMA.to_string())),
        1 => Just(Some(USER_SCHEMA.to_string())),
    ];
    let sub = if allow_sub {
        proptest::option::of(attr_name()).boxed()
    } else {
        Just(None).boxed()
    };
    (urn, attr_name(), sub).prop_map(|(urn, name, sub)| AttrPath { urn, name, sub })
}

fn comp_value() -> impl Strategy<Value = CompValue> {
    prop_oneof![
        Just(CompValue::Null),
        any::<bool>().prop_map(CompValue::Bool),
        any::<i64>().prop_map(|n| CompValue::Number(n.into())),
        any::<f64>()
            .prop_filter_map("finite", Number::from_f64)
            .prop_map(CompValue::Number),
        ".{0,12}".prop_map(CompValue::String),
    ]
}

fn op() -> impl Strategy<Value = CompareOp> {
    prop_oneof![
        Just(CompareOp::Eq),
        Just(CompareOp::Ne),
        Just(CompareOp::Co),
        Just(CompareOp::Sw),
        Just(CompareOp::Ew),
        Just(CompareOp::Gt),
        Just(CompareOp::Ge),
        Just(CompareOp::Lt),
        Just(CompareOp::Le),
    ]
}

fn attr_exp() -> impl Strategy<Value = Filter> {
    prop_oneof![
        attr_path(true).prop_map(Filter::Present),
        (attr_path(true), op(), comp_value()).prop_map(|(p, o, v)| Filter::Compare(p, o, v)),
    ]
}

fn combine(leaf: BoxedStrategy<Filter>, depth: u32) -> BoxedStrategy<Filter> {
    leaf.prop_recursive(depth, 24, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|a| Filter::Not(Box::new(a))),
        ]
    })
    .boxed()
}

fn filter() -> impl Strategy<Value = Filter> {
    // Value paths cannot nest, so their inner filters are built without them.
    let value_path = (attr_path(false), combine(attr_exp().boxed(), 2))
        .prop_map(|(p, inner)| Filter::ValuePath(p, Box::new(inner)));
    let leaf = prop_oneof![3 => attr_exp(), 1 => value_path].boxed();
    combine(leaf, 5)
}

proptest! {
    // Failing seeds are kept in filter_props.proptest-regressions and replayed first.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn display_then_parse_round_trips(f in filter()) {
        let text = f.to_string();
        prop_assume!(text.len() <= MAX_FILTER_LEN);
        let parsed = parse_filter(&text);
        prop_assert_eq!(parsed.as_ref().ok(), Some(&f), "{} -> {:?}", text, parsed);
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_text(s in ".{0,300}") {
        let _ = parse_filter(&s);
        let _ = parse_path(&s);
    }

    #[test]
    fn parsers_never_panic_on_grammar_soup(s in r#"([a-zA-Z]{1,4}|eq|and|or|not|pr|[()\[\]"\\. :$0-9-]|urn:x:y){0,80}"#) {
        if let Ok(f) = parse_filter(&s) {
            // Whatever parses also survives printing and evaluation.
            let text = f.to_string();
            if text.len() <= MAX_FILTER_LEN {
                prop_assert_eq!(parse_filter(&text).ok(), Some(f.clone()));
            }
            let _ = idbridge_scim::filter::matches(&f, &serde_json::json!({"a": [1, "x", {"b": true}]}), ResourceSchema::user());
        }
        let _ = parse_path(&s);
    }

    #[test]
    fn hostile_nesting_is_rejected_not_overflowed(n in 17usize..5000) {
        let deep = format!("{}a pr{}", "(".repeat(n), ")".repeat(n));
        prop_assert!(parse_filter(&deep).is_err());
        let nots = format!("{}a pr{}", "not (".repeat(n), ")".repeat(n));
        prop_assert!(parse_filter(&nots).is_err());
    }
}
