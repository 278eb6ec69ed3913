//! Byte layouts of what the retired sled backend stored (read by the migration): tree names,
//! event records and expiring values. Everything read back is checked; bad bytes become
//! [`StoreError::Corrupt`], never a panic. (sled also kept `_event_ids` and an `_expiry` index;
//! both were derived data, rebuilt by SQLite from the export.)

use crate::error::{Result, StoreError};
#[cfg(test)]
use crate::types::NewEvent;
use crate::types::StoredEvent;

/// Tree-name prefix of ordinary tables. Internal trees start with `_`, so no table can collide.
pub(crate) const TABLE_PREFIX: &str = "t:";
/// Tree-name prefix of expiring tables.
pub(crate) const EXPIRING_PREFIX: &str = "x:";
/// seq (u64 BE) -> encoded event.
pub(crate) const EVENTS_TREE: &str = "_events";
/// Small metadata values.
pub(crate) const META_TREE: &str = "_meta";
/// Highest event seq ever assigned (u64 BE); survives compaction of the whole log.
pub(crate) const META_LAST_SEQ: &[u8] = b"last_event_seq";

const EVENT_FORMAT_V1: u8 = 1;

pub(crate) fn u64_from_be(table: &str, bytes: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| {
        StoreError::corrupt(table, format!("expected 8 bytes, got {}", bytes.len()))
    })?;
    Ok(u64::from_be_bytes(arr))
}

pub(crate) fn utf8_key(table: &str, bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| StoreError::corrupt(table, "key is not UTF-8"))
}

#[cfg(test)]
fn push_str(out: &mut Vec<u8>, s: &str) {
    // Lengths are u32: an id or kind over 4 GiB is not something we store.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len as usize]);
}

/// Event record layout: version, id, kind, org flag [+ org], created_at (i64 BE), body (rest).
/// (The encoders are the retired backend's, kept to test the decoders.)
#[cfg(test)]
pub(crate) fn encode_event(event: &NewEvent) -> Vec<u8> {
    encode_event_fields(
        &event.id,
        &event.kind,
        event.organization_id.as_deref(),
        event.created_at_ms,
        &event.body,
    )
}

/// [`encode_event`] from loose fields.
#[cfg(test)]
pub(crate) fn encode_event_fields(
    id: &str,
    kind: &str,
    organization_id: Option<&str>,
    created_at_ms: i64,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + id.len() + kind.len() + body.len());
    out.push(EVENT_FORMAT_V1);
    push_str(&mut out, id);
    push_str(&mut out, kind);
    match organization_id {
        Some(org) => {
            out.push(1);
            push_str(&mut out, org);
        }
        None => out.push(0),
    }
    out.extend_from_slice(&created_at_ms.to_be_bytes());
    out.extend_from_slice(body);
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    table: &'a str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(StoreError::corrupt(self.table, "event record truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn string(&mut self) -> Result<String> {
        let len_bytes: [u8; 4] = self
            .take(4)?
            .try_into()
            .map_err(|_| StoreError::corrupt(self.table, "bad length"))?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec())
            .map_err(|_| StoreError::corrupt(self.table, "string field is not UTF-8"))
    }
}

pub(crate) fn decode_event(seq_key: &[u8], bytes: &[u8]) -> Result<StoredEvent> {
    let table = EVENTS_TREE;
    let seq = u64_from_be(table, seq_key)?;
    let mut r = Reader { bytes, table };
    let version = r.u8()?;
    if version != EVENT_FORMAT_V1 {
        return Err(StoreError::corrupt(
            table,
            format!("event {seq}: unknown format version {version}"),
        ));
    }
    let id = r.string()?;
    let kind = r.string()?;
    let organization_id = match r.u8()? {
        0 => None,
        1 => Some(r.string()?),
        other => {
            return Err(StoreError::corrupt(
                table,
                format!("event {seq}: bad organization flag {other}"),
            ))
        }
    };
    let ts: [u8; 8] = r
        .take(8)?
        .try_into()
        .map_err(|_| StoreError::corrupt(table, "bad timestamp"))?;
    Ok(StoredEvent {
        seq,
        id,
        kind,
        organization_id,
        created_at_ms: i64::from_be_bytes(ts),
        body: r.bytes.to_vec(),
    })
}

/// Expiring value layout: expires_at_ms (i64 BE) then the value.
#[cfg(test)]
pub(crate) fn encode_expiring(expires_at_ms: i64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&expires_at_ms.to_be_bytes());
    out.extend_from_slice(value);
    out
}

pub(crate) fn decode_expiring(table: &str, bytes: &[u8]) -> Result<(i64, Vec<u8>)> {
    if bytes.len() < 8 {
        return Err(StoreError::corrupt(
            table,
            "expiring record shorter than 8 bytes",
        ));
    }
    let (head, value) = bytes.split_at(8);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(head);
    Ok((i64::from_be_bytes(ts), value.to_vec()))
}

/// Smallest byte string greater than every string starting with `prefix` (None: no bound).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(org: Option<&str>) -> NewEvent {
        NewEvent {
            id: "event_01H".into(),
            kind: "dsync.user.updated".into(),
            organization_id: org.map(str::to_owned),
            created_at_ms: -42,
            body: br#"{"x":1}"#.to_vec(),
        }
    }

    #[test]
    fn event_round_trip_with_and_without_org() {
        for org in [None, Some("org_1")] {
            let new = sample(org);
            let decoded = decode_event(&9u64.to_be_bytes(), &encode_event(&new)).expect("decode");
            assert_eq!(decoded, StoredEvent::from_new(9, new));
        }
    }

    #[test]
    fn truncated_or_unknown_event_bytes_are_corrupt_not_panics() {
        let bytes = encode_event(&sample(Some("org_1")));
        for cut in 0..bytes.len() - 7 {
            // Anything cut before the end of the timestamp must be rejected.
            let res = decode_event(&1u64.to_be_bytes(), &bytes[..cut]);
            assert!(matches!(res, Err(StoreError::Corrupt { .. })), "cut {cut}");
        }
        let mut wrong_version = bytes.clone();
        wrong_version[0] = 9;
        assert!(decode_event(&1u64.to_be_bytes(), &wrong_version).is_err());
        assert!(decode_event(&[1, 2], &bytes).is_err());
    }

    #[test]
    fn prefix_end_bounds() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn expiring_value_round_trip_and_short_input() {
        let enc = encode_expiring(-7, b"v");
        assert_eq!(
            decode_expiring("x", &enc).expect("decode"),
            (-7, b"v".to_vec())
        );
        assert!(decode_expiring("x", &enc[..7]).is_err());
    }
}
