//! Keeping the summaries current: the refresher reads what changed in the store and the
//! coordinator since its last pass and builds the next [`Snapshot`].
//!
//! - Runs: the store's `runs/` listing (key and size) each pass; a record is read again only
//!   when it is new, its size changed, or it is still running. Every `full_every` the registry
//!   and every record are read again.
//! - Model history: the task summaries of the `HealthOptions::runs` most recent scored runs,
//!   read once per run (kept by run, with the models interned); health is judged again only
//!   when that set or the registry changed.
//! - The coordinator (workers, queue depth, the running runs' tasks), the schedules and the
//!   ingest pipeline are read every pass: a few small queries.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use fleetscore_core::Clock;
use fleetscore_jobs::coordinator::Coordinator;
use fleetscore_jobs::registry::{self, ModelMeta};
use fleetscore_jobs::run::{self, RunRecord};
use fleetscore_jobs::{RunStatus, TaskStatus};
use fleetscore_store::Store;

use crate::health::{self, HealthOptions, Outcome};
use crate::pipeline::PipelineReader;
use crate::schedule::Schedules;
use crate::snapshot::{
    Histogram, Live, ModelRow, Models, Point, RecentRun, RunRow, Runs, Snapshot, WorkerView,
    host_of,
};

/// What the monitor reads, and how.
pub struct Sources {
    /// The store: runs, summaries, logs, the registry, aggregator checkpoints.
    pub store: Store,
    /// The coordinator: workers, queue, tasks. `None` reads history from the store only.
    pub coordinator: Option<Arc<dyn Coordinator>>,
    /// The ingest log's folder, if the pipeline's front half is to be shown.
    pub log_dir: Option<PathBuf>,
    /// The schedules ([`crate::NoScheduler`] until a scheduler is plugged in).
    pub schedules: Arc<dyn Schedules>,
    /// The clock every "how long ago" is measured by.
    pub clock: Arc<dyn Clock>,
    /// Thresholds and intervals.
    pub options: Options,
}

/// How the monitor judges and refreshes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// Model health thresholds (and how many recent runs they look at).
    pub health: HealthOptions,
    /// A worker that showed life within this many ms is live.
    pub live_ms: i64,
    /// The workers' lease: a task whose last heartbeat is older has lost it.
    pub lease_ms: i64,
    /// Every this many ms, the registry and every run record are read again.
    pub full_every_ms: i64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            health: HealthOptions::default(),
            live_ms: 120_000,
            lease_ms: 60_000,
            full_every_ms: 60_000,
        }
    }
}

/// What one recent run did to every model it planned, by interned model id.
struct RunModels {
    run: RecentRun,
    /// When it started, epoch ms (models imported later do not count it).
    started_ms: i64,
    /// Its record's size when its summaries were read (a re-run changes it).
    record_size: u64,
    /// Whether a task failed for good: models missing from its summaries are then unknown.
    lost_tasks: bool,
    /// (model id, outcome), sorted by id.
    entries: Vec<(u32, Outcome)>,
    /// Failure reasons by model id.
    reasons: HashMap<u32, Arc<str>>,
}

/// The refresher: the state carried from one pass to the next.
pub struct Refresher {
    sources: Arc<Sources>,
    /// Run rows by id, and the record size each was read at.
    runs: HashMap<String, (Arc<RunRow>, u64)>,
    /// Recent runs' model outcomes, by run id.
    recent: HashMap<String, Arc<RunModels>>,
    /// (device, tag, version) → model id.
    ids: Interner,
    registry: Vec<ModelMeta>,
    estimators: HashSet<Arc<str>>,
    last_full_ms: Option<i64>,
    models: Arc<Models>,
    task_durations: Histogram,
    /// Runs whose task durations are counted (id and finish time).
    timed: HashSet<(String, Option<i64>)>,
    pipeline: Option<PipelineReader>,
}

impl Refresher {
    /// A refresher that has read nothing yet.
    pub fn new(sources: Arc<Sources>) -> Refresher {
        let pipeline = sources.log_dir.as_deref().map(PipelineReader::new);
        Refresher {
            sources,
            runs: HashMap::new(),
            recent: HashMap::new(),
            ids: Interner::default(),
            registry: Vec::new(),
            estimators: HashSet::new(),
            last_full_ms: None,
            models: Arc::new(Models::default()),
            task_durations: Histogram::durations(),
            timed: HashSet::new(),
            pipeline,
        }
    }

    /// The sources it reads.
    pub fn sources(&self) -> &Arc<Sources> {
        &self.sources
    }

    /// One pass: reads what changed and returns the new snapshot. What cannot be read is
    /// reported in the snapshot's problems; the rest is still current.
    pub fn refresh(&mut self) -> Snapshot {
        let now = self.sources.clock.now_ms();
        let mut problems = Vec::new();
        let full = self
            .last_full_ms
            .is_none_or(|t| now - t >= self.sources.options.full_every_ms);
        let mut models_dirty = false;
        if full {
            match registry::list(&self.sources.store) {
                Ok(list) => {
                    models_dirty |= list != self.registry;
                    self.registry = list;
                }
                Err(e) => problems.push(format!("reading the model registry: {e}")),
            }
            self.last_full_ms = Some(now);
        }
        if let Err(e) = self.read_runs(full) {
            problems.push(format!("reading run records: {e}"));
        }
        let live = self.read_live(now, &mut problems);
        models_dirty |= self.read_recent(&mut problems);
        if models_dirty {
            self.models = Arc::new(self.build_models());
        }
        let pipeline = self
            .pipeline
            .as_mut()
            .map(|p| Arc::new(p.read(&self.sources.store, now)));
        let schedules = self.sources.schedules.schedules(now).map(Arc::new);
        let rows: Vec<Arc<RunRow>> = self.runs.values().map(|(r, _)| r.clone()).collect();
        Snapshot {
            taken_ms: now,
            runs: Arc::new(Runs::new(rows)),
            models: self.models.clone(),
            live: live.map(Arc::new),
            pipeline,
            schedules,
            task_durations: Arc::new(self.task_durations.clone()),
            problems: Arc::new(problems),
        }
    }

    /// Reads new and changed run records (all of them when `full`).
    fn read_runs(&mut self, full: bool) -> fleetscore_jobs::Result<()> {
        let store = &self.sources.store;
        let listed: HashMap<String, u64> = store
            .list("runs")?
            .into_iter()
            .filter_map(|e| {
                let id = e.key.strip_prefix("runs/")?.strip_suffix(".json")?;
                (!id.contains('/')).then(|| (id.to_string(), e.size))
            })
            .collect();
        self.runs.retain(|id, _| listed.contains_key(id));
        let stale: Vec<String> = listed
            .iter()
            .filter(|(id, size)| match self.runs.get(*id) {
                None => true,
                Some((row, seen)) => full || *seen != **size || row.status == RunStatus::Running,
            })
            .map(|(id, _)| id.clone())
            .collect();
        for chunk in stale.chunks(256) {
            let keys: Vec<String> = chunk
                .iter()
                .map(|id| fleetscore_store::layout::run_record(id))
                .collect();
            let bytes = match store.get_many(&keys) {
                Ok(b) => b,
                // Deleted since listed (a re-plan): read them one by one.
                Err(_) => keys
                    .iter()
                    .map(|k| store.get_opt(k).map(Option::unwrap_or_default))
                    .collect::<fleetscore_store::Result<_>>()?,
            };
            for ((id, key), b) in chunk.iter().zip(&keys).zip(bytes) {
                if b.is_empty() {
                    continue;
                }
                let record: RunRecord =
                    serde_json::from_slice(&b).map_err(|e| fleetscore_jobs::Error::Corrupt {
                        what: key.clone(),
                        message: e.to_string(),
                    })?;
                let mut row = RunRow::of(&record);
                if row.status == RunStatus::Running
                    && let Some(c) = &self.sources.coordinator
                    && let Ok(Some(state)) = c.run(id)
                {
                    row.live = Some(state.tasks);
                }
                self.runs
                    .insert(id.clone(), (Arc::new(row), b.len() as u64));
            }
        }
        Ok(())
    }

    /// Workers, the queue and the running runs' tasks, from the coordinator.
    fn read_live(&self, now: i64, problems: &mut Vec<String>) -> Option<Live> {
        let c = self.sources.coordinator.as_ref()?;
        let o = &self.sources.options;
        let mut live = Live::default();
        match c.queue_depth() {
            Ok(d) => live.queue_depth = d,
            Err(e) => problems.push(format!("reading the queue depth: {e}")),
        }
        let mut by_state: HashMap<TaskStatus, u64> = HashMap::new();
        for (row, _) in self.runs.values() {
            if row.status != RunStatus::Running {
                continue;
            }
            match c.tasks(&row.id) {
                Ok(tasks) => {
                    for t in &tasks {
                        *by_state.entry(t.status).or_default() += 1;
                    }
                    live.running.insert(row.id.clone(), tasks);
                }
                Err(e) => problems.push(format!("reading the tasks of run {}: {e}", row.id)),
            }
        }
        live.tasks_by_state = TaskStatus::ALL
            .iter()
            .map(|&s| (s, by_state.get(&s).copied().unwrap_or(0)))
            .collect();
        match c.workers(now - 86_400_000) {
            Ok(workers) => {
                live.workers = workers
                    .into_iter()
                    .map(|w| {
                        let expired = w
                            .running
                            .iter()
                            .filter(|(run, shard)| {
                                live.running.get(run).is_some_and(|tasks| {
                                    tasks.iter().any(|t| {
                                        t.shard == *shard
                                            && t.status == TaskStatus::Running
                                            && t.heartbeat_ms.or(t.started_ms).unwrap_or(0)
                                                + o.lease_ms
                                                < now
                                    })
                                })
                            })
                            .count() as u32;
                        WorkerView {
                            host: host_of(&w.worker),
                            live: now - w.last_seen_ms <= o.live_ms,
                            expired_leases: expired,
                            state: w,
                        }
                    })
                    .collect();
            }
            Err(e) => problems.push(format!("reading workers: {e}")),
        }
        Some(live)
    }

    /// Reads the summaries of recent scored runs not read yet; true if the set changed.
    fn read_recent(&mut self, problems: &mut Vec<String>) -> bool {
        let k = self.sources.options.health.runs.max(1);
        let mut scored: Vec<(&Arc<RunRow>, u64)> = self
            .runs
            .values()
            .filter(|(r, _)| r.is_scored())
            .map(|(r, size)| (r, *size))
            .collect();
        scored.sort_by(|a, b| {
            (b.0.to_ms, b.0.from_ms, &b.0.id).cmp(&(a.0.to_ms, a.0.from_ms, &a.0.id))
        });
        scored.truncate(k);
        let wanted: HashMap<String, (Arc<RunRow>, u64)> = scored
            .into_iter()
            .map(|(r, s)| (r.id.clone(), (r.clone(), s)))
            .collect();
        let before = self.recent.len();
        self.recent.retain(|id, m| {
            wanted
                .get(id)
                .is_some_and(|(_, size)| *size == m.record_size)
        });
        let mut changed = self.recent.len() != before;
        let mut missing: Vec<&(Arc<RunRow>, u64)> = wanted
            .iter()
            .filter(|(id, _)| !self.recent.contains_key(*id))
            .map(|(_, v)| v)
            .collect();
        missing.sort_by_key(|(r, _)| (r.to_ms, r.id.clone()));
        for (row, size) in missing {
            match run::summaries(&self.sources.store, &row.id) {
                Ok(summaries) => {
                    let key = (row.id.clone(), row.finished_ms);
                    let first_time = self.timed.insert(key);
                    let mut entries = Vec::new();
                    let mut reasons = HashMap::new();
                    for s in &summaries {
                        if first_time {
                            self.task_durations
                                .observe(s.read_seconds + s.score_seconds + s.write_seconds);
                        }
                        for m in &s.scored {
                            let id = self.ids.id(&m.device, &m.tag, &m.version);
                            entries.push((
                                id,
                                Outcome::Scored {
                                    rows: u32::try_from(m.rows).unwrap_or(u32::MAX),
                                    anomalies: u32::try_from(m.anomalies).unwrap_or(u32::MAX),
                                },
                            ));
                        }
                        for m in &s.no_data {
                            let id = self.ids.id(&m.device, &m.tag, &m.version);
                            entries.push((id, Outcome::NoData));
                        }
                        for f in &s.failed {
                            let id = self.ids.id(&f.device, &f.tag, &f.version);
                            entries.push((id, Outcome::Failed(f.kind)));
                            reasons.insert(id, Arc::from(f.reason.as_str()));
                        }
                    }
                    entries.sort_by_key(|e| e.0);
                    entries.dedup_by_key(|e| e.0);
                    self.recent.insert(
                        row.id.clone(),
                        Arc::new(RunModels {
                            run: RecentRun {
                                id: row.id.clone(),
                                from_ms: row.from_ms,
                                to_ms: row.to_ms,
                            },
                            started_ms: row.started_ms.unwrap_or(i64::MIN),
                            record_size: *size,
                            lost_tasks: row.tasks_failed > 0,
                            entries,
                            reasons,
                        }),
                    );
                    changed = true;
                }
                Err(e) => problems.push(format!("reading the summaries of run {}: {e}", row.id)),
            }
        }
        changed
    }

    /// Judges every model of the registry from the recent runs.
    fn build_models(&mut self) -> Models {
        let o = self.sources.options.health;
        let mut recent: Vec<Arc<RunModels>> = self.recent.values().cloned().collect();
        recent.sort_by(|a, b| {
            (a.run.to_ms, a.run.from_ms, &a.run.id).cmp(&(b.run.to_ms, b.run.from_ms, &b.run.id))
        });
        let registry = std::mem::take(&mut self.registry);
        let mut rows = Vec::with_capacity(registry.len());
        for meta in &registry {
            let id = self
                .ids
                .ids
                .get(&(meta.device.clone(), meta.tag.clone(), meta.version.clone()))
                .copied();
            let imported = fleetscore_core::parse_time(&meta.imported_at).unwrap_or(i64::MIN);
            let mut points = Vec::new();
            let mut last_failure = None;
            for (slot, r) in recent.iter().enumerate() {
                let found = id.and_then(|id| {
                    r.entries
                        .binary_search_by_key(&id, |e| e.0)
                        .ok()
                        .map(|i| (id, r.entries[i].1))
                });
                let outcome = match found {
                    Some((id, outcome)) => {
                        if let Outcome::Failed(_) = outcome {
                            last_failure = r.reasons.get(&id).cloned();
                        }
                        outcome
                    }
                    // Planned before this version existed: not its run.
                    None if r.started_ms < imported => continue,
                    None if r.lost_tasks => Outcome::Unknown,
                    None => Outcome::NoData,
                };
                points.push(Point {
                    slot: slot as u16,
                    outcome,
                });
            }
            let outcomes: Vec<Outcome> = points.iter().map(|p| p.outcome).collect();
            let estimator = match self.estimators.get(meta.estimator.as_str()) {
                Some(e) => e.clone(),
                None => {
                    let e: Arc<str> = Arc::from(meta.estimator.as_str());
                    self.estimators.insert(e.clone());
                    e
                }
            };
            rows.push(ModelRow {
                device: meta.device.clone(),
                tag: meta.tag.clone(),
                version: meta.version.clone(),
                estimator,
                imported_at: meta.imported_at.clone(),
                last_failure: if matches!(outcomes.last(), Some(Outcome::Failed(_))) {
                    last_failure
                } else {
                    None
                },
                health: health::assess(&outcomes, &o),
                points,
            });
        }
        self.registry = registry;
        rows.sort_by(|a, b| (&a.device, &a.tag).cmp(&(&b.device, &b.tag)));
        // Interned ids of models neither current nor in a recent run are forgotten.
        let live_ids: BTreeSet<u32> = recent
            .iter()
            .flat_map(|r| r.entries.iter().map(|e| e.0))
            .collect();
        if self.ids.ids.len() > 2 * (live_ids.len() + rows.len()) + 1024 {
            self.ids.ids.retain(|_, id| live_ids.contains(id));
        }
        let mut models = Models {
            recent: recent.iter().map(|r| r.run.clone()).collect(),
            rows,
            attention: Vec::new(),
            flag_counts: [0; 4],
            options: o,
        };
        models.index_flags();
        models
    }
}

/// Interned (device, tag, version) triples, so a recent run's outcomes are small numbers.
#[derive(Default)]
struct Interner {
    ids: HashMap<(String, String, String), u32>,
    /// The next id: ids are never reused, so a recent run's entries stay valid when others
    /// are forgotten.
    next: u32,
}

impl Interner {
    /// The id of (device, tag, version), given a new one if unseen.
    fn id(&mut self, device: &str, tag: &str, version: &str) -> u32 {
        let key = (device.to_string(), tag.to_string(), version.to_string());
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = self.next;
        self.next += 1;
        self.ids.insert(key, id);
        id
    }
}
