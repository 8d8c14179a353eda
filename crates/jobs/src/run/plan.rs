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
            });
    }
    // Which buckets have readings or closed windows in the window: two listings per hour.
    let mut with_data = BTreeSet::new();
    for hour in hours_between(from_ms, to_ms) {
        for entry in store.list(&layout::readings_hour(&hour))? {
            if let Some((_, b)) = layout::parse_readings_key(&entry.key) {
                with_data.insert(b);
            }
        }
        for entry in store.list(&layout::features_hour(&hour))? {
            if let Some((_, b)) = layout::parse_features_key(&entry.key) {
                with_data.insert(b);
            }
        }
    }
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
    // Largest buckets first, each to the task with the fewest models so far.
    buckets.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    let mut groups: Vec<(Vec<u32>, Vec<ModelRef>)> = vec![(Vec::new(), Vec::new()); want];
    for (b, models) in buckets {
        let g = groups
            .iter_mut()
            .min_by_key(|g| g.1.len())
            .expect("at least one group");
        g.0.push(b);
        g.1.extend(models);
    }
    let mut groups: Vec<_> = groups.into_iter().filter(|g| !g.0.is_empty()).collect();
    for g in &mut groups {
        g.0.sort_unstable();
        g.1.sort_by(|a, b| (&a.device, &a.tag).cmp(&(&b.device, &b.tag)));
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    let tasks = groups
        .into_iter()
        .enumerate()
        .map(|(i, (buckets, models))| TaskSpec {
            shard: i as u32,
            buckets,
            models,
        })
        .collect();
    Ok(Plan {
        tasks,
        models_without_data,
    })
}
