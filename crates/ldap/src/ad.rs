//! Active Directory encodings: `objectGUID` bytes, `userAccountControl` flags and ranged
//! attribute names (`member;range=0-1499`).

/// `userAccountControl` bit ACCOUNTDISABLE.
pub const UAC_ACCOUNTDISABLE: u32 = 0x2;

/// The canonical GUID string of a 16-byte `objectGUID` (the first three fields are stored
/// little-endian, which is why a plain hex dump differs from what AD tools show).
pub fn guid_to_string(b: &[u8]) -> Option<String> {
    if b.len() != 16 {
        return None;
    }
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15]
    ))
}

/// The `objectGUID` bytes of a canonical GUID string (for `(objectGUID=\xx...)` filters).
pub fn guid_to_bytes(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut raw = [0u8; 16];
    for (i, slot) in raw.iter_mut().enumerate() {
        *slot = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    let mut out = [0u8; 16];
    for (i, &o) in order.iter().enumerate() {
        out[i] = raw[o];
    }
    Some(out)
}

/// Whether a `userAccountControl` value marks the account disabled. The value is a signed
/// 32-bit decimal on the wire; an unparsable value is not read as disabled.
pub fn uac_disabled(value: &str) -> Option<bool> {
    let v = value.trim();
    let n: u32 = v
        .parse::<u32>()
        .ok()
        .or_else(|| v.parse::<i32>().ok().map(|i| i as u32))?;
    Some(n & UAC_ACCOUNTDISABLE != 0)
}

/// A ranged attribute description, e.g. `member;range=1500-2999` or `member;range=3000-*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangedAttr {
    /// Base attribute name (`member`).
    pub name: String,
    /// First value index.
    pub start: u64,
    /// Last value index, `None` for `*` (this was the last chunk).
    pub end: Option<u64>,
}

/// Parses `name;range=lo-hi` (options in any position, case-insensitive); `None` when the
/// description carries no range option.
pub fn parse_ranged(desc: &str) -> Option<RangedAttr> {
    let mut parts = desc.split(';');
    let name = parts.next()?.to_owned();
    for opt in parts {
        let Some(r) = opt
            .get(..6)
            .filter(|p| p.eq_ignore_ascii_case("range="))
            .and_then(|_| opt.get(6..))
        else {
            continue;
        };
        let (lo, hi) = r.split_once('-')?;
        let start = lo.parse().ok()?;
        let end = if hi == "*" {
            None
        } else {
            Some(hi.parse().ok()?)
        };
        return Some(RangedAttr { name, start, end });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_bytes_are_mixed_endian() {
        // Bytes as AD stores them vs. the string AD tools show (Data1..Data3 little-endian).
        let bytes = [
            0x65, 0x6c, 0xd1, 0x98, 0x4a, 0x2b, 0x6a, 0x4d, 0x98, 0xd2, 0x4a, 0x6c, 0x8f, 0x23,
            0x55, 0x09,
        ];
        let s = guid_to_string(&bytes).expect("16 bytes");
        assert_eq!(s, "98d16c65-2b4a-4d6a-98d2-4a6c8f235509");
        assert_eq!(guid_to_bytes(&s), Some(bytes));
        assert_eq!(guid_to_string(&bytes[..15]), None);
        assert_eq!(guid_to_bytes("not-a-guid"), None);
    }

    #[test]
    fn uac_flags() {
        assert_eq!(uac_disabled("512"), Some(false)); // NORMAL_ACCOUNT
        assert_eq!(uac_disabled("514"), Some(true)); // NORMAL_ACCOUNT | ACCOUNTDISABLE
        assert_eq!(uac_disabled("66050"), Some(true)); // + DONT_EXPIRE_PASSWORD
        assert_eq!(uac_disabled("66048"), Some(false));
        assert_eq!(uac_disabled("-2147483646"), Some(true)); // signed wire form with bit 1
        assert_eq!(uac_disabled("x"), None);
    }

    #[test]
    fn range_names() {
        assert_eq!(
            parse_ranged("member;range=0-1499"),
            Some(RangedAttr {
                name: "member".into(),
                start: 0,
                end: Some(1499)
            })
        );
        assert_eq!(
            parse_ranged("member;Range=1500-*"),
            Some(RangedAttr {
                name: "member".into(),
                start: 1500,
                end: None
            })
        );
        assert_eq!(parse_ranged("member"), None);
        assert_eq!(parse_ranged("member;binary"), None);
        assert_eq!(parse_ranged("member;range=x-1"), None);
    }
}
