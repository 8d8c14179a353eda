//! Fetching a task's model files. A model in a pack is read with a ranged read of the pack, and
//! files lying near each other in one pack share one read; a model in no pack is read from its
//! own file. A pack that is gone, unreadable, or holds other bytes than the catalog says
//! (checked against each version's content hash) is passed over for the models' own files,
//! which versions stored before packs held the only copy have, and the task's log says so; a
//! model with no file of its own then fails with the pack's trouble.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use fleetscore_store::{Store, layout};

use crate::coordinator::ModelRef;
use crate::error::{Error, Result};
use crate::registry;

/// Files in one pack closer than this are fetched by one read, gap included: a request costs
/// more than reading this much more of the pack.
pub(crate) const MERGE_GAP: u64 = 1 << 20;

/// The model files a task fetched, by model file key, and what its log should say.
pub(crate) struct Fetched {
    /// Each model's bytes, or why they could not be read.
    pub files: HashMap<String, Result<Vec<u8>>>,
    /// Lines for the task's log: packs passed over, and why.
    pub notes: Vec<String>,
}

/// The reads that fetch `slots` (offset, len) from one pack: sorted, with slots closer than
/// [`MERGE_GAP`] merged into one range.
pub(crate) fn merged_ranges(slots: &mut [(u64, u64)]) -> Vec<Range<u64>> {
    slots.sort_unstable();
    let mut out: Vec<Range<u64>> = Vec::new();
    for &(offset, len) in slots.iter() {
        let end = offset + len;
        match out.last_mut() {
            Some(last) if offset <= last.end + MERGE_GAP => last.end = last.end.max(end),
            _ => out.push(offset..end),
        }
    }
    out
}

/// Why a pack did not give a model its bytes.
#[derive(Debug, Clone)]
enum Trouble<'p> {
    /// The pack is not in the store.
    Gone(&'p str),
    /// It could not be read, or holds other bytes: the reason.
    Unreadable(String),
}

/// Fetches the files of `models`.
pub(crate) fn fetch(store: &Store, models: &[&ModelRef]) -> Fetched {
    let mut files = HashMap::with_capacity(models.len());
    let mut notes = Vec::new();
    let mut by_pack: BTreeMap<&str, Vec<&ModelRef>> = BTreeMap::new();
    let mut loose: Vec<&ModelRef> = Vec::new();
    // Models whose pack failed them, and how.
    let mut passed_over: Vec<(&ModelRef, Trouble<'_>)> = Vec::new();
    for &m in models {
        match &m.pack {
            Some(slot) => by_pack.entry(slot.key.as_str()).or_default().push(m),
            None => loose.push(m),
        }
    }
    for (pack, members) in by_pack {
        let mut slots: Vec<(u64, u64)> = members
            .iter()
            .filter_map(|m| m.pack.as_ref().map(|s| (s.offset, s.len)))
            .collect();
        let ranges = merged_ranges(&mut slots);
        let parts = match store.get_ranges(pack, &ranges) {
            Ok(parts) => parts,
            Err(e) => {
                notes.push(format!(
                    "pack {pack} could not be read ({e}): {} models read from their own files where they have one",
                    members.len()
                ));
                let trouble = match e {
                    fleetscore_store::Error::NotFound(_) => Trouble::Gone(pack),
                    e => Trouble::Unreadable(format!("pack {pack} could not be read: {e}")),
                };
                passed_over.extend(members.into_iter().map(|m| (m, trouble.clone())));
                continue;
            }
        };
        let mut damaged = 0;
        for m in members {
            let slot = m.pack.as_ref().expect("grouped by pack");
            let i = ranges.partition_point(|r| r.end <= slot.offset);
            let bytes = ranges.get(i).and_then(|r| {
                let start = (slot.offset - r.start) as usize;
                parts[i].get(start..start + slot.len as usize)
            });
            match bytes {
                Some(b) if registry::version_of(b) == m.version => {
                    files.insert(
                        layout::model_file(&m.device, &m.tag, &m.version),
                        Ok(b.to_vec()),
                    );
                }
                _ => {
                    damaged += 1;
                    passed_over.push((
                        m,
                        Trouble::Unreadable(format!("pack {pack} does not hold its bytes")),
                    ));
                }
            }
        }
        if damaged > 0 {
            notes.push(format!(
                "pack {pack} holds other bytes than its catalog says for {damaged} models: read from their own files where they have one"
            ));
        }
    }
    let keys: Vec<String> = loose
        .iter()
        .map(|m| layout::model_file(&m.device, &m.tag, &m.version))
        .collect();
    match store.get_many(&keys) {
        Ok(all) => files.extend(
            keys.into_iter()
                .zip(all.into_iter().map(|b| Ok(b.to_vec()))),
        ),
        // One missing file must not hide the others: fall back to one request each (and to
        // the layout before this one).
        Err(_) => files.extend(
            loose
                .iter()
                .zip(keys)
                .map(|(m, k)| (k, registry::own_file(store, &m.device, &m.tag, &m.version))),
        ),
    }
    for (m, trouble) in passed_over {
        let key = layout::model_file(&m.device, &m.tag, &m.version);
        let got = match registry::own_file(store, &m.device, &m.tag, &m.version) {
            Err(Error::Store(fleetscore_store::Error::NotFound(_))) => Err(match trouble {
                // Its only copy is gone: missing, named by the pack.
                Trouble::Gone(pack) => {
                    Error::Store(fleetscore_store::Error::NotFound(pack.to_string()))
                }
                Trouble::Unreadable(why) => Error::Corrupt {
                    what: format!("{}/{} version {}", m.device, m.tag, m.version),
                    message: format!("{why}, and the version has no file of its own"),
                },
            }),
            got => got,
        };
        files.insert(key, got);
    }
    Fetched { files, notes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearby_slots_share_a_read_and_distant_ones_do_not() {
        let mut slots = [
            (5_000_000, 10),
            (0, 100),
            (100, 50),
            (150 + MERGE_GAP, 7),
            (10, 20),
        ];
        assert_eq!(
            merged_ranges(&mut slots),
            vec![0..157 + MERGE_GAP, 5_000_000..5_000_010]
        );
        assert!(merged_ranges(&mut []).is_empty());
    }
}
