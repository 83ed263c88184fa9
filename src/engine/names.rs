//! A fixed set of member names, looked up by the projection once per member of every vendor
//! answer (`super::projection`).
//!
//! A `HashMap<Box<str>, _>` lookup (foldhash, hashbrown's group probe, then `memcmp`) was ~77
//! instructions a member, ~5 % of a vendor call on a miss. The names are few and known when
//! the plan is compiled, so the table here is small and sparse (at most half full): a name is
//! hashed from its length and its first and last eight bytes, which for a name of sixteen
//! bytes or fewer are all of it, so most lookups read one slot and compare three words (longer
//! names are compared in full after that). Names that hash alike are probed linearly; lookups
//! come from vendor text but the table holds only the compiled names, so no answer can make a
//! lookup walk further than the table.

/// Names with a value each, built once and read many times.
#[derive(Debug, Clone)]
pub struct Names<T> {
    entries: Vec<(Key, Box<str>, T)>,
    /// 1 + the index of the entry each slot holds (0: empty). A power of two long, at least
    /// twice the number of entries, so every probe ends.
    slots: Box<[u32]>,
}

impl<T> Default for Names<T> {
    fn default() -> Self {
        Names {
            entries: Vec::new(),
            slots: Box::new([0]),
        }
    }
}

/// What a name is hashed and first compared by: its length and its first and last bytes.
/// For a name of up to sixteen bytes they cover every byte, so equal keys are equal names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    head: u64,
    tail: u64,
    len: usize,
}

impl Key {
    /// Read by fixed-size loads (a copy of a variable length was a `memcpy` call).
    fn of(b: &[u8]) -> Key {
        let n = b.len();
        let (head, tail) = if n >= 8 {
            (load8(b, 0), load8(b, n - 8))
        } else if n >= 4 {
            (u64::from(load4(b, 0)), u64::from(load4(b, n - 4)))
        } else if n > 0 {
            let small = u64::from(b[0]) | u64::from(b[n / 2]) << 8 | u64::from(b[n - 1]) << 16;
            (small, 0)
        } else {
            (0, 0)
        };
        Key { head, tail, len: n }
    }

    /// Where its probe starts in a table of `mask + 1` slots.
    fn home(&self, mask: usize) -> usize {
        let x = (self.head.wrapping_mul(K1) ^ self.tail.rotate_left(29) ^ self.len as u64)
            .wrapping_mul(K2);
        (x ^ (x >> 29)) as usize & mask
    }
}

/// Multipliers of the hash (odd, bits well spread: splitmix64's).
const K1: u64 = 0x9e37_79b9_7f4a_7c15;
const K2: u64 = 0xbf58_476d_1ce4_e5b9;

/// Eight bytes at `at` as a number.
fn load8(b: &[u8], at: usize) -> u64 {
    let mut w = [0_u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Four bytes at `at` as a number.
fn load4(b: &[u8], at: usize) -> u32 {
    let mut w = [0_u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

impl<T> Names<T> {
    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&T> {
        let key = Key::of(name.as_bytes());
        let mask = self.slots.len() - 1;
        let mut i = key.home(mask);
        loop {
            let e = self.slots[i] as usize;
            let (k, text, v) = self.entries.get(e.checked_sub(1)?)?;
            if *k == key && (key.len <= 16 || **text == *name) {
                return Some(v);
            }
            i = (i + 1) & mask;
        }
    }

    /// The value of `name`, made by `T::default()` if it has none yet. Building only: each
    /// new name re-lays the table.
    pub fn get_or_default(&mut self, name: &str) -> &mut T
    where
        T: Default,
    {
        let i = match self.entries.iter().position(|(_, k, _)| **k == *name) {
            Some(i) => i,
            None => {
                let key = Key::of(name.as_bytes());
                self.entries.push((key, name.into(), T::default()));
                self.lay();
                self.entries.len() - 1
            }
        };
        &mut self.entries[i].2
    }

    /// Places every entry in a table at most half full.
    fn lay(&mut self) {
        let len = (2 * self.entries.len()).next_power_of_two().max(2);
        let mask = len - 1;
        let mut slots = vec![0_u32; len];
        for (e, (k, _, _)) in self.entries.iter().enumerate() {
            let mut i = k.home(mask);
            while slots[i] != 0 {
                i = (i + 1) & mask;
            }
            // more names than u32 counts cannot come from a config
            slots[i] = u32::try_from(e + 1).unwrap_or(u32::MAX);
        }
        self.slots = slots.into_boxed_slice();
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.entries.iter_mut().map(|(_, _, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_finds_its_own_value_and_no_other_name_finds_one() {
        // names the length/ends hash cannot tell apart (same length, first and last eight
        // bytes) must still be told apart by their text
        let names: Vec<String> = [
            "",
            "a",
            "_id",
            "id",
            "ID",
            "ticketCode",
            "ticketName",
            "ticketType",
            "userTicketCode",
            "useStartTime",
            "useEndTime",
            "useStatus",
            "名称",
            "名稱",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain((0..40).map(|i| format!("aaaaaaaa{i:03}zzzzzzzz")))
        .collect();
        let mut table = Names::default();
        for (i, n) in names.iter().enumerate() {
            *table.get_or_default(n) = i;
        }
        // a second insertion of a name keeps its value
        assert_eq!(*table.get_or_default("ticketCode"), 5);
        for (i, n) in names.iter().enumerate() {
            assert_eq!(table.get(n), Some(&i), "{n:?}");
        }
        for other in [
            "b",
            "_ID",
            "ticketcode",
            "ticketCod",
            "ticketCodes",
            "aaaaaaaa040zzzzzzzz",
        ] {
            assert_eq!(table.get(other), None, "{other:?}");
        }
        assert_eq!(table.values_mut().count(), names.len());
    }

    #[test]
    fn names_differing_in_any_one_byte_are_told_apart() {
        // every length up to past sixteen, one byte changed at every place: a key that left a
        // byte of a short name out would take one of these for another
        let names: Vec<String> = (1..=20)
            .flat_map(|n| {
                (0..=n).map(move |at| {
                    (0..n)
                        .map(|i| if i == at { 'b' } else { 'a' })
                        .collect::<String>()
                })
            })
            .collect();
        let mut table = Names::default();
        for (i, n) in names.iter().enumerate() {
            *table.get_or_default(n) = i;
        }
        for (i, n) in names.iter().enumerate() {
            assert_eq!(table.get(n), Some(&i), "{n:?}");
        }
        assert_eq!(table.get(&"a".repeat(21)), None);
        assert_eq!(table.get("c"), None);
    }

    #[test]
    fn an_empty_table_finds_nothing() {
        let table: Names<u8> = Names::default();
        assert!(table.is_empty());
        assert_eq!(table.get(""), None);
        assert_eq!(table.get("code"), None);
    }
}
