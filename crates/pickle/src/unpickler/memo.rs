//! The pickle memo: values stored by PUT/MEMOIZE and fetched again by GET, which is how shared
//! references stay shared.

use std::collections::HashMap;

use crate::value::Value;

/// The memo. Picklers number entries 0, 1, 2, ..., so they live in a vector; a key far beyond
/// the others (only a hand-made file has one) goes to a map, so no key makes us allocate much.
#[derive(Default)]
pub(super) struct Memo {
    dense: Vec<Option<Value>>,
    sparse: HashMap<u32, Value>,
    /// Distinct keys stored (what MEMOIZE numbers the next entry with).
    len: usize,
}

impl Memo {
    /// How far past the dense part a key may be and still extend it.
    const MAX_GAP: usize = 1024;

    pub(super) fn insert(&mut self, k: u32, v: Value) {
        let i = k as usize;
        if i >= self.dense.len() && i <= self.dense.len() + Memo::MAX_GAP {
            self.dense.resize(i + 1, None);
        }
        let previous = match self.dense.get_mut(i) {
            Some(slot) => {
                let old = slot.replace(v);
                // A key stored in the map before the vector reached it moves here.
                old.or_else(|| {
                    if self.sparse.is_empty() {
                        None
                    } else {
                        self.sparse.remove(&k)
                    }
                })
            }
            None => self.sparse.insert(k, v),
        };
        if previous.is_none() {
            self.len += 1;
        }
    }

    pub(super) fn get(&self, k: u32) -> Option<Value> {
        match self.dense.get(k as usize) {
            Some(slot) => *slot,
            None => self.sparse.get(&k).copied(),
        }
    }

    /// Bytes the memo holds (the map's entries counted with their hash-table overhead).
    pub(super) fn footprint(&self) -> usize {
        self.dense.capacity() * std::mem::size_of::<Option<Value>>()
            + self.sparse.capacity() * (std::mem::size_of::<(u32, Value)>() + 8)
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_keys_dense_sparse_and_moved() {
        let mut memo = Memo::default();
        memo.insert(0, Value::Int(10));
        memo.insert(u32::MAX, Value::Int(11));
        memo.insert(3, Value::Int(12));
        assert_eq!(memo.dense.len(), 4, "a small gap extends the vector");
        assert_eq!(memo.sparse.len(), 1, "a far key does not allocate up to it");
        memo.insert(2000, Value::Int(13));
        assert_eq!((memo.get(2000), memo.get(1)), (Some(Value::Int(13)), None));
        // The vector grows over 2000: its entry moves in, and is counted once.
        for k in 4..2001 {
            memo.insert(k, Value::Int(1));
        }
        assert_eq!(memo.get(2000), Some(Value::Int(1)));
        assert_eq!(memo.get(u32::MAX), Some(Value::Int(11)));
        assert_eq!(memo.len(), 2 + 1 + 1997);
    }
}
