//! Dense numbering of a snapshot run's idp_ids, compactly.
//!
//! A million-user delivery interns a million idp_ids. A `HashMap<Box<str>, u32>` cost ~100 MB
//! for that (24-byte buckets at up to 2× the entries, a 32-byte malloc chunk per short string,
//! and both tables alive while it rehashed). Here the strings share one buffer and the table
//! holds 4-byte indexes: about 22 bytes per id for 10-byte ids.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use crate::error::{EngineError, Result};

const EMPTY: u32 = u32::MAX;

/// Each distinct string once, numbered densely from 0 in first-seen order.
pub(crate) struct Interner {
    /// Every interned string, concatenated in number order.
    bytes: String,
    /// `ends[i]`: where string `i` ends in `bytes` (it starts where `i - 1` ends).
    ends: Vec<u32>,
    /// Open addressing, linear probing: string numbers, `EMPTY` for a free slot. The length is
    /// a power of two, at most half full.
    slots: Vec<u32>,
    /// Keyed per run: idp_ids come from a customer's files (no crafted collisions).
    hasher: RandomState,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            bytes: String::new(),
            ends: Vec::new(),
            slots: vec![EMPTY; 16],
            hasher: RandomState::new(),
        }
    }
}

impl Interner {
    /// The string numbered `i`.
    fn str_at(&self, i: u32) -> &str {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }

    /// The slot holding `s`, or the free slot where it would go.
    fn slot_of(&self, s: &str) -> usize {
        let mask = self.slots.len() - 1;
        let mut at = self.hasher.hash_one(s) as usize & mask;
        loop {
            let n = self.slots[at];
            if n == EMPTY || self.str_at(n) == s {
                return at;
            }
            at = (at + 1) & mask;
        }
    }

    /// `s`'s number, assigning the next one if `s` is new.
    pub(crate) fn intern(&mut self, s: &str) -> Result<u32> {
        let at = self.slot_of(s);
        if self.slots[at] != EMPTY {
            return Ok(self.slots[at]);
        }
        let n = u32::try_from(self.ends.len())
            .ok()
            .filter(|&n| n != EMPTY)
            .ok_or_else(|| EngineError::Invalid("snapshot has more than 2^32 records".into()))?;
        let end = u32::try_from(self.bytes.len() + s.len())
            .map_err(|_| EngineError::Invalid("snapshot ids exceed 4 GiB".into()))?;
        self.bytes.push_str(s);
        self.ends.push(end);
        self.slots[at] = n;
        if self.ends.len() * 2 > self.slots.len() {
            self.grow();
        }
        Ok(n)
    }

    /// `s`'s number, if interned.
    pub(crate) fn get(&self, s: &str) -> Option<u32> {
        let n = self.slots[self.slot_of(s)];
        (n != EMPTY).then_some(n)
    }

    /// Doubles the table and re-inserts every number.
    fn grow(&mut self) {
        let mut slots = vec![EMPTY; self.slots.len() * 2];
        let mask = slots.len() - 1;
        for n in 0..self.ends.len() as u32 {
            let mut at = self.hasher.hash_one(self.str_at(n)) as usize & mask;
            while slots[at] != EMPTY {
                at = (at + 1) & mask;
            }
            slots[at] = n;
        }
        self.slots = slots;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_densely_in_first_seen_order_across_growth() {
        let mut i = Interner::default();
        for n in 0..10_000u32 {
            assert_eq!(i.intern(&format!("emp{n}")).unwrap(), n);
        }
        // Again: same numbers, nothing new.
        for n in (0..10_000u32).rev() {
            assert_eq!(i.intern(&format!("emp{n}")).unwrap(), n);
            assert_eq!(i.get(&format!("emp{n}")), Some(n));
        }
        assert_eq!(i.get("emp10000"), None);
        assert_eq!(i.get(""), None);
        assert_eq!(i.intern("").unwrap(), 10_000);
        assert_eq!(i.get(""), Some(10_000));
        // Prefixes of one another are distinct strings.
        assert_eq!(i.intern("emp1").unwrap(), 1);
        assert_eq!(i.intern("emp").unwrap(), 10_001);
        assert_eq!(i.get("émp1"), None);
    }
}
