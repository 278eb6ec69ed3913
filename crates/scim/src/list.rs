//! List responses and paging (RFC 7644 §3.4.2, §3.4.2.4).

use serde_json::{json, Value};

use crate::error::ScimError;
use crate::filter::{check_filter, get_ci, matches, parse_filter, Filter};
use crate::projection::Projection;
use crate::schema::{ResourceSchema, LIST_RESPONSE_SCHEMA};
use crate::validate::require_message_schema;

/// Schema URN of a `POST .../.search` body.
pub const SEARCH_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

/// The raw query parameters of `GET /Users` or `GET /Groups`, as the router extracted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryParams<'a> {
    /// `filter`
    pub filter: Option<&'a str>,
    /// `attributes`
    pub attributes: Option<&'a str>,
    /// `excludedAttributes`
    pub excluded_attributes: Option<&'a str>,
    /// `startIndex`
    pub start_index: Option<&'a str>,
    /// `count`
    pub count: Option<&'a str>,
}

/// A parsed list or search query. GET with query parameters and `POST /.search` both become
/// one of these, so they behave identically. `sortBy` is ignored: sorting is advertised as
/// unsupported.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    /// The filter, already checked against the schema.
    pub filter: Option<Filter>,
    /// `attributes` / `excludedAttributes`.
    pub projection: Projection,
    /// Paging.
    pub params: ListParams,
}

impl ListQuery {
    /// Parses GET query parameters.
    pub fn from_params(
        q: &QueryParams<'_>,
        schema: &ResourceSchema,
        max_results: usize,
    ) -> Result<Self, ScimError> {
        let filter = match q.filter.map(str::trim).filter(|f| !f.is_empty()) {
            Some(f) => {
                let f = parse_filter(f)?;
                check_filter(&f, schema)?;
                Some(f)
            }
            None => None,
        };
        Ok(Self {
            filter,
            projection: Projection::from_query(q.attributes, q.excluded_attributes)?,
            params: ListParams::from_query(q.start_index, q.count, max_results)?,
        })
    }

    /// Parses a `POST .../.search` body (RFC 7644 §3.4.3): attribute lists are arrays of
    /// strings and `startIndex`/`count` are numbers.
    pub fn from_search_body(
        body: &Value,
        schema: &ResourceSchema,
        max_results: usize,
    ) -> Result<Self, ScimError> {
        require_message_schema(body, SEARCH_REQUEST_SCHEMA)?;
        let list = |name: &str| -> Result<Option<String>, ScimError> {
            match get_ci(body, name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| {
                        i.as_str().ok_or_else(|| {
                            ScimError::invalid_value(format!("{name} must be an array of strings"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(|v| Some(v.join(","))),
                Some(_) => Err(ScimError::invalid_value(format!(
                    "{name} must be an array of strings"
                ))),
            }
        };
        let text = |name: &str| -> Result<Option<String>, ScimError> {
            match get_ci(body, name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Number(n)) => Ok(Some(n.to_string())),
                Some(_) => Err(ScimError::invalid_value(format!(
                    "{name} has the wrong type"
                ))),
            }
        };
        let (attributes, excluded) = (list("attributes")?, list("excludedAttributes")?);
        let (filter, start_index, count) = (text("filter")?, text("startIndex")?, text("count")?);
        let q = QueryParams {
            filter: filter.as_deref(),
            attributes: attributes.as_deref(),
            excluded_attributes: excluded.as_deref(),
            start_index: start_index.as_deref(),
            count: count.as_deref(),
        };
        Self::from_params(&q, schema, max_results)
    }

    /// Answers the query over `candidates` in memory: filter, count, page, project. The store
    /// can narrow `candidates` first with [`crate::filter::index_lookup`].
    pub fn respond<'a>(
        &self,
        candidates: impl IntoIterator<Item = &'a Value>,
        schema: &ResourceSchema,
    ) -> Value {
        let hits: Vec<&Value> = candidates
            .into_iter()
            .filter(|r| self.filter.as_ref().is_none_or(|f| matches(f, r, schema)))
            .collect();
        let page = self
            .params
            .page(&hits)
            .iter()
            .map(|r| self.projection.apply(r, schema))
            .collect();
        list_response(page, hits.len(), self.params.start_index)
    }
}

/// Paging parameters after RFC 7644 §3.4.2.4's clamping rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListParams {
    /// 1-based index of the first result (values below 1 become 1).
    pub start_index: usize,
    /// Most results to return (negative becomes 0; capped at `maxResults`).
    pub count: usize,
}

impl ListParams {
    /// Reads `startIndex` and `count` query values. Absent `count` means `max_results`; a
    /// value that is not an integer is 400 `invalidValue`.
    pub fn from_query(
        start_index: Option<&str>,
        count: Option<&str>,
        max_results: usize,
    ) -> Result<Self, ScimError> {
        let int = |name: &str, v: &str| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| ScimError::invalid_value(format!("{name} must be an integer")))
        };
        let start_index = match start_index {
            None => 1,
            Some(v) => usize::try_from(int("startIndex", v)?.max(1)).unwrap_or(usize::MAX),
        };
        let count = match count {
            None => max_results,
            Some(v) => usize::try_from(int("count", v)?.max(0))
                .unwrap_or(usize::MAX)
                .min(max_results),
        };
        Ok(Self { start_index, count })
    }

    /// 0-based offset of the first result.
    pub fn offset(&self) -> usize {
        self.start_index.saturating_sub(1)
    }

    /// The page of `items` these parameters select (empty past the end).
    pub fn page<'a, T>(&self, items: &'a [T]) -> &'a [T] {
        let start = self.offset().min(items.len());
        let end = start.saturating_add(self.count).min(items.len());
        items.get(start..end).unwrap_or_default()
    }
}

/// A `ListResponse` with `itemsPerPage` equal to the number of resources returned.
pub fn list_response(resources: Vec<Value>, total_results: usize, start_index: usize) -> Value {
    json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": total_results,
        "startIndex": start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lp(s: Option<&str>, c: Option<&str>) -> Option<(usize, usize)> {
        ListParams::from_query(s, c, 100)
            .ok()
            .map(|p| (p.start_index, p.count))
    }

    #[test]
    fn clamps_per_rfc() {
        assert_eq!(lp(None, None), Some((1, 100)));
        assert_eq!(lp(Some("0"), Some("-5")), Some((1, 0)));
        assert_eq!(lp(Some("-3"), Some("1000")), Some((1, 100)));
        assert_eq!(lp(Some(" 7 "), Some("10")), Some((7, 10)));
        assert_eq!(lp(Some("x"), None), None);
        assert_eq!(lp(None, Some("1.5")), None);
        let e = ListParams::from_query(Some("abc"), None, 10).err();
        assert_eq!(
            e.map(|e| e.to_json()["scimType"].clone()),
            Some(json!("invalidValue"))
        );
    }

    #[test]
    fn pages_safely() {
        let items: Vec<u32> = (1..=10).collect();
        let page = |s, c| {
            ListParams {
                start_index: s,
                count: c,
            }
            .page(&items)
            .to_vec()
        };
        assert_eq!(page(1, 3), vec![1, 2, 3]);
        assert_eq!(page(9, 5), vec![9, 10]);
        assert_eq!(page(11, 5), Vec::<u32>::new());
        assert_eq!(page(usize::MAX, usize::MAX), Vec::<u32>::new());
        assert_eq!(page(2, 0), Vec::<u32>::new());
    }

    #[test]
    fn get_and_search_queries_answer_alike() {
        let users: Vec<Value> = (1..=5)
            .map(|i| json!({"schemas": [crate::schema::USER_SCHEMA], "id": format!("u{i}"), "userName": format!("user{i}"), "active": i % 2 == 1, "title": "T"}))
            .collect();
        let schema = ResourceSchema::user();
        let get = ListQuery::from_params(
            &QueryParams {
                filter: Some("active eq true"),
                attributes: Some("userName"),
                start_index: Some("2"),
                count: Some("1"),
                ..Default::default()
            },
            schema,
            100,
        );
        let search = ListQuery::from_search_body(
            &json!({"schemas": [SEARCH_REQUEST_SCHEMA], "filter": "active eq true", "attributes": ["userName"], "startIndex": 2, "count": 1}),
            schema,
            100,
        );
        let (get, search) = (
            get.unwrap_or_else(|e| panic!("{e}")),
            search.unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(get, search);
        let r = get.respond(&users, schema);
        assert_eq!(r["totalResults"], 3);
        assert_eq!(r["startIndex"], 2);
        assert_eq!(
            r["Resources"],
            json!([{"schemas": [crate::schema::USER_SCHEMA], "id": "u3", "userName": "user3"}])
        );
        let all = ListQuery::from_params(&QueryParams::default(), schema, 100)
            .map(|q| q.respond(&users, schema));
        assert_eq!(all.map(|r| r["totalResults"].clone()).ok(), Some(json!(5)));
    }

    #[test]
    fn bad_queries_are_scim_errors() {
        let schema = ResourceSchema::user();
        let q = |f: &str| {
            ListQuery::from_params(
                &QueryParams {
                    filter: Some(f),
                    ..Default::default()
                },
                schema,
                10,
            )
            .err()
        };
        assert_eq!(
            q("userName eq").map(|e| e.to_json()["scimType"].clone()),
            Some(json!("invalidFilter"))
        );
        assert_eq!(
            q("active gt true").map(|e| e.to_json()["scimType"].clone()),
            Some(json!("invalidFilter"))
        );
        let body = |b: Value| {
            ListQuery::from_search_body(&b, schema, 10)
                .err()
                .map(|e| e.scim_type)
        };
        assert_eq!(
            body(json!({"filter": "userName pr"})),
            Some(Some(crate::error::ScimType::InvalidSyntax))
        );
        assert_eq!(
            body(json!({"schemas": [SEARCH_REQUEST_SCHEMA], "attributes": "userName"})),
            Some(Some(crate::error::ScimType::InvalidValue))
        );
        assert_eq!(
            body(json!({"schemas": [SEARCH_REQUEST_SCHEMA], "count": true})),
            Some(Some(crate::error::ScimType::InvalidValue))
        );
        assert_eq!(
            body(json!({"schemas": [SEARCH_REQUEST_SCHEMA], "filter": "("})),
            Some(Some(crate::error::ScimType::InvalidFilter))
        );
    }

    #[test]
    fn builds_list_response() {
        let r = list_response(vec![json!({"id": "a"}), json!({"id": "b"})], 7, 3);
        assert_eq!(r["schemas"][0], LIST_RESPONSE_SCHEMA);
        assert_eq!(r["totalResults"], 7);
        assert_eq!(r["startIndex"], 3);
        assert_eq!(r["itemsPerPage"], 2);
        assert_eq!(r["Resources"][1]["id"], "b");
    }
}
