//! Planning a window: which models have data, grouped by device bucket into shard tasks.

use std::collections::{BTreeMap, BTreeSet};

use fleetscore_store::{Store, layout};

use crate::coordinator::{ModelRef, TaskSpec};
use crate::error::Result;
use crate::readings::hours_between;
use crate::registry;

/// A plan: the tasks, and the models that have no readings in the window (not scheduled).
#[derive(Debug, Clone)]
pub struct Plan {
    /// Shard tasks.
    pub tasks: Vec<TaskSpec>,
    /// Models whose devices have no readings in the window.
    pub models_without_data: Vec<ModelRef>,
}

/// Plans a window: the current version of every model, grouped by device bucket, the buckets
/// with readings in the window split over tasks of at most `max_models_per_task` models (and at
/// least `min_tasks` tasks when there are enough buckets).
///
/// A task's buckets are consecutive, so that its models lie together in a model pack (packs
/// are sorted by bucket) and one ranged read fetches them; it carries the readings and windows
/// files of its buckets as listed here, so it need not list them again.
pub fn plan(
    store: &Store,
    from_ms: i64,
    to_ms: i64,
    min_tasks: usize,
    max_models_per_task: usize,
) -> Result<Plan> {
    let mut by_bucket: BTreeMap<u32, Vec<ModelRef>> = BTreeMap::new();
    for meta in registry::list(store)? {
        by_bucket
            .entry(layout::bucket(&meta.device))
            .or_default()
            .push(ModelRef {
                device: meta.device,
                tag: meta.tag,
                version: meta.version,
                features: meta.features,
                pack: meta.pack,
            });
    }
    // Which buckets have readings or closed windows in the window, and their files: two
    // listings per hour.
    let mut files: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for hour in hours_between(from_ms, to_ms) {
        for entry in store.list(&layout::readings_hour(&hour))? {
            if let Some((_, b)) = layout::parse_readings_key(&entry.key) {
                files.entry(b).or_default().push(entry.key);
            }
        }
        for entry in store.list(&layout::features_hour(&hour))? {
            if let Some((_, b)) = layout::parse_features_key(&entry.key) {
                files.entry(b).or_default().push(entry.key);
            }
        }
    }
    let with_data: BTreeSet<u32> = files.keys().copied().collect();
    let mut models_without_data = Vec::new();
    let mut buckets: Vec<(u32, Vec<ModelRef>)> = Vec::new();
    for (b, models) in by_bucket {
        if with_data.contains(&b) {
            buckets.push((b, models));
        } else {
            models_without_data.extend(models);
        }
    }
    let total: usize = buckets.iter().map(|(_, m)| m.len()).sum();
    let want = total
        .div_ceil(max_models_per_task.max(1))
        .max(min_tasks)
        .min(buckets.len())
        .max(1);
    // Consecutive buckets per task, cut where the running count of models passes each task's
    // even share.
    let mut groups: Vec<(Vec<u32>, Vec<ModelRef>)> = Vec::with_capacity(want);
    let mut seen = 0usize;
    let remaining_buckets = buckets.len();
    for (i, (b, models)) in buckets.into_iter().enumerate() {
        let share = (groups.len() * total).div_ceil(want);
        // A new task when this one has its share, or when the buckets left are only enough
        // for the tasks still to come.
        let must = want - groups.len() >= remaining_buckets - i && !groups.is_empty();
        if groups.is_empty() || (groups.len() < want && (seen >= share || must)) {
            groups.push((Vec::new(), Vec::new()));
        }
        seen += models.len();
        let g = groups.last_mut().expect("at least one group");
        g.0.push(b);
        g.1.extend(models);
    }
    for g in &mut groups {
        g.1.sort_by(|a, b| (&a.device, &a.tag).cmp(&(&b.device, &b.tag)));
    }
    let tasks = groups
        .into_iter()
        .enumerate()
        .map(|(i, (buckets, models))| TaskSpec {
            shard: i as u32,
            train: None,
            files: Some(
                buckets
                    .iter()
                    .flat_map(|b| files.get(b).into_iter().flatten().cloned())
                    .collect(),
            ),
            buckets,
            models,
        })
        .collect();
    Ok(Plan {
        tasks,
        models_without_data,
    })
}
