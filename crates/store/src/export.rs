//! The whole-store dump format used by `idbridge export` / `import`.
//!
//! One [`ExportRecord`] per JSON line. Stored values that are single-line JSON are embedded as
//! JSON (readable, greppable, and byte-exact thanks to `RawValue`); anything else goes in a
//! base64 `*_b64` field so the round trip is lossless for arbitrary bytes. Deserialize lines
//! with `serde_json::from_str` (a `serde_json::Value` detour would lose the raw embedding).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::StoreError;
use crate::types::StoredEvent;

/// An imported event must continue the log: seq 1 or more, each one after the previous
/// (`prev_seq`). Every backend's `import` checks this.
pub(crate) fn check_import_seq(
    prev_seq: Option<u64>,
    event: &StoredEvent,
) -> crate::error::Result<()> {
    let expected = prev_seq.map(|p| p + 1);
    if event.seq == 0 || expected.is_some_and(|e| e != event.seq) {
        return Err(StoreError::corrupt(
            "import",
            format!(
                "event {} has seq {} (expected {})",
                event.id,
                event.seq,
                expected.map_or("a positive seq".to_owned(), |e| e.to_string())
            ),
        ));
    }
    Ok(())
}

/// The import loop every backend shares: checks the event seqs, hands `flush` the records in
/// chunks of `chunk_size` (one transaction each), and ends with the highest seq ever assigned
/// (an `EventSeq` record) so no seq is handed out again. Returns the records read.
pub(crate) fn import_in_chunks(
    records: &mut dyn Iterator<Item = crate::error::Result<ExportRecord>>,
    chunk_size: usize,
    flush: &mut dyn FnMut(Vec<ExportRecord>) -> crate::error::Result<()>,
) -> crate::error::Result<u64> {
    let mut count = 0u64;
    let mut prev_seq: Option<u64> = None;
    let mut declared_last = 0u64;
    let mut chunk: Vec<ExportRecord> = Vec::with_capacity(chunk_size);
    for record in records {
        let record = record?;
        match &record {
            ExportRecord::Event(event) => {
                check_import_seq(prev_seq, event)?;
                prev_seq = Some(event.seq);
            }
            ExportRecord::EventSeq { last_seq } => {
                declared_last = declared_last.max(*last_seq);
            }
            _ => {}
        }
        chunk.push(record);
        count += 1;
        if chunk.len() == chunk_size {
            flush(std::mem::take(&mut chunk))?;
        }
    }
    let last = declared_last.max(prev_seq.unwrap_or(0));
    chunk.push(ExportRecord::EventSeq { last_seq: last });
    flush(chunk)?;
    tracing::info!(records = count, last_event_seq = last, "import finished");
    Ok(count)
}

/// One record of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "wire::Record", try_from = "wire::Record")]
pub enum ExportRecord {
    /// A row of an ordinary table.
    Entry {
        /// Table name.
        table: String,
        /// Key.
        key: String,
        /// Value bytes.
        value: Vec<u8>,
    },
    /// A row of an expiring table (expired rows not yet purged are exported too).
    Expiring {
        /// Table name.
        table: String,
        /// Key.
        key: String,
        /// Value bytes.
        value: Vec<u8>,
        /// Expiry, Unix milliseconds.
        expires_at_ms: i64,
    },
    /// An event of the log, with its seq.
    Event(StoredEvent),
    /// An owner migration that was applied (typed-row tables; see [`crate::rows`]).
    OwnerMigration {
        /// The owner (`directory.users`, ...).
        owner: String,
        /// Its migration version.
        version: i64,
        /// What the migration did.
        description: String,
        /// When it ran, Unix milliseconds.
        applied_at_ms: i64,
    },
    /// A typed-row table and the DDL (table + indexes) that makes it; comes before its rows.
    RowTable {
        /// Table name.
        table: String,
        /// Owning module.
        owner: String,
        /// `CREATE TABLE IF NOT EXISTS ...; CREATE INDEX IF NOT EXISTS ...;`
        create_sql: String,
    },
    /// A row of a typed-row table: every column in declared order.
    Row {
        /// Table name.
        table: String,
        /// Column values.
        values: Vec<crate::rows::RowValue>,
    },
    /// The highest event seq ever assigned. Needed because retention may have removed the
    /// newest events' predecessors, or all events; an import must never hand out a seq again.
    EventSeq {
        /// Highest seq assigned so far.
        last_seq: u64,
    },
}

fn encode_payload(bytes: &[u8]) -> (Option<Box<RawValue>>, Option<String>) {
    // Only single-line, whitespace-trimmed JSON is embedded: the line stays one line, and the
    // bytes come back identical. `null` is excluded because an Option would read it as absent.
    if let Ok(text) = std::str::from_utf8(bytes) {
        let plain = !text.contains(['\n', '\r']) && text.trim() == text && text != "null";
        if plain {
            if let Ok(raw) = RawValue::from_string(text.to_owned()) {
                return (Some(raw), None);
            }
        }
    }
    (
        None,
        Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
    )
}

fn decode_payload(
    field: &str,
    json: Option<Box<RawValue>>,
    b64: Option<String>,
) -> Result<Vec<u8>, String> {
    match (json, b64) {
        (Some(raw), None) => Ok(raw.get().as_bytes().to_vec()),
        (None, Some(text)) => base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| format!("{field}_b64 is not base64: {e}")),
        (Some(_), Some(_)) => Err(format!("both {field} and {field}_b64 are set")),
        (None, None) => Err(format!("one of {field} or {field}_b64 is required")),
    }
}

mod wire {
    use serde::{Deserialize, Serialize};
    use serde_json::value::RawValue;

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case", deny_unknown_fields)]
    pub(super) enum Record {
        Entry {
            table: String,
            key: String,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            value: Option<Box<RawValue>>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            value_b64: Option<String>,
        },
        Expiring {
            table: String,
            key: String,
            expires_at_ms: i64,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            value: Option<Box<RawValue>>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            value_b64: Option<String>,
        },
        Event {
            seq: u64,
            id: String,
            kind: String,
            organization_id: Option<String>,
            created_at_ms: i64,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            body: Option<Box<RawValue>>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            body_b64: Option<String>,
        },
        EventSeq {
            last_seq: u64,
        },
        OwnerMigration {
            owner: String,
            version: i64,
            description: String,
            applied_at_ms: i64,
        },
        RowTable {
            table: String,
            owner: String,
            create_sql: String,
        },
        /// Values: null, an integer, a string, or `{"b64": "..."}` for bytes.
        Row {
            table: String,
            values: Vec<serde_json::Value>,
        },
    }
}

fn value_to_wire(v: crate::rows::RowValue) -> serde_json::Value {
    use crate::rows::RowValue;
    match v {
        RowValue::Null => serde_json::Value::Null,
        RowValue::Integer(i) => serde_json::Value::from(i),
        RowValue::Text(s) => serde_json::Value::String(s),
        RowValue::Blob(b) => serde_json::json!({
            "b64": base64::engine::general_purpose::STANDARD.encode(b)
        }),
    }
}

fn value_from_wire(v: serde_json::Value) -> Result<crate::rows::RowValue, String> {
    use crate::rows::RowValue;
    Ok(match v {
        serde_json::Value::Null => RowValue::Null,
        serde_json::Value::String(s) => RowValue::Text(s),
        serde_json::Value::Number(n) => RowValue::Integer(
            n.as_i64()
                .ok_or_else(|| format!("row value {n} is not a 64-bit integer"))?,
        ),
        serde_json::Value::Object(mut o) if o.len() == 1 => match o.remove("b64") {
            Some(serde_json::Value::String(text)) => RowValue::Blob(
                base64::engine::general_purpose::STANDARD
                    .decode(text.as_bytes())
                    .map_err(|e| format!("row value b64 is not base64: {e}"))?,
            ),
            _ => return Err("a row value object must be {\"b64\": \"...\"}".to_owned()),
        },
        other => {
            return Err(format!(
                "row value {other} is not null, an integer, text or {{\"b64\": ...}}"
            ))
        }
    })
}

impl From<ExportRecord> for wire::Record {
    fn from(record: ExportRecord) -> Self {
        match record {
            ExportRecord::Entry { table, key, value } => {
                let (value, value_b64) = encode_payload(&value);
                wire::Record::Entry {
                    table,
                    key,
                    value,
                    value_b64,
                }
            }
            ExportRecord::Expiring {
                table,
                key,
                value,
                expires_at_ms,
            } => {
                let (value, value_b64) = encode_payload(&value);
                wire::Record::Expiring {
                    table,
                    key,
                    expires_at_ms,
                    value,
                    value_b64,
                }
            }
            ExportRecord::Event(event) => {
                let (body, body_b64) = encode_payload(&event.body);
                wire::Record::Event {
                    seq: event.seq,
                    id: event.id,
                    kind: event.kind,
                    organization_id: event.organization_id,
                    created_at_ms: event.created_at_ms,
                    body,
                    body_b64,
                }
            }
            ExportRecord::EventSeq { last_seq } => wire::Record::EventSeq { last_seq },
            ExportRecord::OwnerMigration {
                owner,
                version,
                description,
                applied_at_ms,
            } => wire::Record::OwnerMigration {
                owner,
                version,
                description,
                applied_at_ms,
            },
            ExportRecord::RowTable {
                table,
                owner,
                create_sql,
            } => wire::Record::RowTable {
                table,
                owner,
                create_sql,
            },
            ExportRecord::Row { table, values } => wire::Record::Row {
                table,
                values: values.into_iter().map(value_to_wire).collect(),
            },
        }
    }
}

impl TryFrom<wire::Record> for ExportRecord {
    type Error = String;

    fn try_from(record: wire::Record) -> Result<Self, Self::Error> {
        Ok(match record {
            wire::Record::Entry {
                table,
                key,
                value,
                value_b64,
            } => ExportRecord::Entry {
                table,
                key,
                value: decode_payload("value", value, value_b64)?,
            },
            wire::Record::Expiring {
                table,
                key,
                expires_at_ms,
                value,
                value_b64,
            } => ExportRecord::Expiring {
                table,
                key,
                value: decode_payload("value", value, value_b64)?,
                expires_at_ms,
            },
            wire::Record::Event {
                seq,
                id,
                kind,
                organization_id,
                created_at_ms,
                body,
                body_b64,
            } => ExportRecord::Event(StoredEvent {
                seq,
                id,
                kind,
                organization_id,
                created_at_ms,
                body: decode_payload("body", body, body_b64)?,
            }),
            wire::Record::EventSeq { last_seq } => ExportRecord::EventSeq { last_seq },
            wire::Record::OwnerMigration {
                owner,
                version,
                description,
                applied_at_ms,
            } => ExportRecord::OwnerMigration {
                owner,
                version,
                description,
                applied_at_ms,
            },
            wire::Record::RowTable {
                table,
                owner,
                create_sql,
            } => ExportRecord::RowTable {
                table,
                owner,
                create_sql,
            },
            wire::Record::Row { table, values } => ExportRecord::Row {
                table,
                values: values
                    .into_iter()
                    .map(value_from_wire)
                    .collect::<Result<_, _>>()?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(record: &ExportRecord) -> (String, ExportRecord) {
        let line = serde_json::to_string(record).expect("serialize");
        let back: ExportRecord = serde_json::from_str(&line).expect("deserialize");
        (line, back)
    }

    #[test]
    fn json_values_are_embedded_verbatim() {
        let value = br#"{"b":1,"a":[1.50,"x"]}"#.to_vec();
        let record = ExportRecord::Entry {
            table: "users".into(),
            key: "k".into(),
            value: value.clone(),
        };
        let (line, back) = round_trip(&record);
        assert!(
            line.contains(r#""value":{"b":1,"a":[1.50,"x"]}"#),
            "embedded as JSON: {line}"
        );
        assert_eq!(back, record);
    }

    #[test]
    fn non_json_and_awkward_json_fall_back_to_base64_losslessly() {
        for value in [
            vec![0xff, 0x00, 0x7b],
            b"not json".to_vec(),
            b"{\n  \"pretty\": true\n}".to_vec(),
            b" 1".to_vec(),
            b"null".to_vec(),
            Vec::new(),
        ] {
            let record = ExportRecord::Expiring {
                table: "codes".into(),
                key: "c".into(),
                value: value.clone(),
                expires_at_ms: -5,
            };
            let (line, back) = round_trip(&record);
            assert!(line.contains("value_b64"), "{line}");
            assert!(!line.contains('\n'));
            assert_eq!(back, record);
        }
    }

    #[test]
    fn event_round_trip() {
        let record = ExportRecord::Event(StoredEvent {
            seq: 7,
            id: "event_01".into(),
            kind: "dsync.user.created".into(),
            organization_id: None,
            created_at_ms: 1_700_000_000_000,
            body: br#"{"id":"event_01"}"#.to_vec(),
        });
        let (line, back) = round_trip(&record);
        assert!(line.contains(r#""body":{"id":"event_01"}"#), "{line}");
        assert_eq!(back, record);
    }

    #[test]
    fn row_records_round_trip_every_value_kind() {
        use crate::rows::RowValue;
        let record = ExportRecord::Row {
            table: "directory_users".into(),
            values: vec![
                RowValue::Text("directory_user_1".into()),
                RowValue::Null,
                RowValue::Integer(-7),
                RowValue::Blob(vec![0, 0xff, 0x7b]),
            ],
        };
        let (line, back) = round_trip(&record);
        assert!(
            line.contains(r#""values":["directory_user_1",null,-7,{"b64":"AP97"}]"#),
            "{line}"
        );
        assert_eq!(back, record);
        let bad = r#"{"row":{"table":"t","values":[1.5]}}"#;
        assert!(serde_json::from_str::<ExportRecord>(bad).is_err());
        let bad = r#"{"row":{"table":"t","values":[{"b64":"AA==","x":1}]}}"#;
        assert!(serde_json::from_str::<ExportRecord>(bad).is_err());
        let bad = r#"{"row":{"table":"t","values":[[1]]}}"#;
        assert!(serde_json::from_str::<ExportRecord>(bad).is_err());
    }

    #[test]
    fn rejects_records_with_both_or_neither_payload() {
        let both = r#"{"entry":{"table":"t","key":"k","value":1,"value_b64":"AA=="}}"#;
        assert!(serde_json::from_str::<ExportRecord>(both).is_err());
        let neither = r#"{"entry":{"table":"t","key":"k"}}"#;
        assert!(serde_json::from_str::<ExportRecord>(neither).is_err());
        let bad_b64 = r#"{"entry":{"table":"t","key":"k","value_b64":"!!"}}"#;
        assert!(serde_json::from_str::<ExportRecord>(bad_b64).is_err());
    }
}
