//! Loaded models kept across tasks and runs by a long-lived process (`fleetscore worker`,
//! `up`), least recently used first out, bounded by the bytes the models hold.
//!
//! A model is keyed by its file's key in the registry, `models/{device}/{tag}@{version}.model`,
//! and a version is the hash of the file's content: a new version is a new key, so an entry is
//! never stale. A worker that scores the same buckets every hour fetches and parses a model
//! once, then only reads its sensors' data.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fleetscore_models::Model;

/// The default bound on the bytes a cache's models hold.
pub const DEFAULT_CACHE_BYTES: usize = 512 << 20;

/// A bounded cache of loaded models, shared by a process's worker threads.
#[derive(Debug)]
pub struct ModelCache {
    capacity: usize,
    inner: Mutex<Lru>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug, Default)]
struct Lru {
    /// key -> (model, its bytes, its last use).
    entries: HashMap<String, (Arc<Model>, usize, u64)>,
    /// last use -> key: the least recently used first.
    by_use: BTreeMap<u64, String>,
    bytes: usize,
    clock: u64,
}

/// What a cache holds and how it served, for logs and run records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Models held.
    pub models: usize,
    /// Bytes they hold.
    pub bytes: usize,
    /// Its bound.
    pub capacity: usize,
    /// Lookups that found their model.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
}

impl ModelCache {
    /// A cache holding models of at most `capacity` bytes in all.
    pub fn new(capacity: usize) -> ModelCache {
        ModelCache {
            capacity,
            inner: Mutex::new(Lru::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        // Nothing that panics holds the lock half-way through a change.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The model kept under `key`, marked as just used.
    pub fn get(&self, key: &str) -> Option<Arc<Model>> {
        let mut lru = self.lock();
        lru.clock += 1;
        let now = lru.clock;
        let found = match lru.entries.get_mut(key) {
            Some((model, _, used)) => {
                let before = std::mem::replace(used, now);
                Some((Arc::clone(model), before))
            }
            None => None,
        };
        match found {
            Some((model, before)) => {
                lru.by_use.remove(&before);
                lru.by_use.insert(now, key.to_string());
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(model)
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Keeps `model` under `key`, evicting the least recently used models until it fits. A
    /// model larger than the whole cache is not kept.
    pub fn insert(&self, key: &str, model: Arc<Model>) {
        let bytes = model.heap_bytes() + key.len();
        if bytes > self.capacity {
            return;
        }
        let mut lru = self.lock();
        lru.clock += 1;
        let now = lru.clock;
        if let Some((_, old_bytes, used)) = lru.entries.remove(key) {
            lru.by_use.remove(&used);
            lru.bytes -= old_bytes;
        }
        while lru.bytes + bytes > self.capacity {
            let Some((_, oldest)) = lru.by_use.pop_first() else {
                break;
            };
            if let Some((_, b, _)) = lru.entries.remove(&oldest) {
                lru.bytes -= b;
            }
        }
        lru.entries.insert(key.to_string(), (model, bytes, now));
        lru.by_use.insert(now, key.to_string());
        lru.bytes += bytes;
    }

    /// What it holds, and its hits and misses so far.
    pub fn stats(&self) -> CacheStats {
        let lru = self.lock();
        CacheStats {
            models: lru.entries.len(),
            bytes: lru.bytes,
            capacity: self.capacity,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Arc<Model> {
        let bytes = include_bytes!("../../../models/tests/data/reference/models/model_1_1");
        Arc::new(Model::from_bytes(bytes).unwrap())
    }

    #[test]
    fn the_least_recently_used_model_goes_first_and_the_bytes_stay_bounded() {
        let m = model();
        let each = m.heap_bytes() + "k0".len();
        // Room for three models.
        let cache = ModelCache::new(3 * each + each / 2);
        for k in ["k0", "k1", "k2"] {
            cache.insert(k, Arc::clone(&m));
        }
        assert!(cache.get("k0").is_some()); // k1 is now the least recently used
        cache.insert("k3", Arc::clone(&m));
        assert!(cache.get("k1").is_none());
        for k in ["k0", "k2", "k3"] {
            assert!(cache.get(k).is_some(), "{k}");
        }
        let s = cache.stats();
        assert_eq!(s.models, 3);
        assert_eq!(s.bytes, 3 * each);
        assert!(s.bytes <= s.capacity);
        assert_eq!((s.hits, s.misses), (4, 1));
        // Inserting a key again replaces it, and counts its bytes once.
        cache.insert("k3", Arc::clone(&m));
        assert_eq!(cache.stats().bytes, 3 * each);
        // Nothing is kept in a cache too small for one model.
        let tiny = ModelCache::new(each - 1);
        tiny.insert("k0", m);
        assert_eq!(tiny.stats().models, 0);
    }

    #[test]
    fn a_model_holds_its_parameters_bytes() {
        let m = model();
        // The reference model_1_1: a StandardScaler and a OneClassSVM on one feature, whose
        // support vectors and coefficients are most of it.
        assert!(
            m.heap_bytes() > 100 && m.heap_bytes() < 64 << 10,
            "{}",
            m.heap_bytes()
        );
    }
}
