//! fleetscore's storage: one key layout ([`layout`]) on any object store — a local folder by
//! default, Azure Blob (`az://container/prefix`), S3 (`s3://bucket/prefix`) or memory — behind a
//! small synchronous API, so that callers (workers on threads) need no async runtime of their
//! own.
#![warn(missing_docs)]

pub mod layout;
mod local;
pub mod sim;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};

/// What went wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store URL or path does not name a supported store.
    #[error("bad store location {location:?}: {message}")]
    Location {
        /// What was given.
        location: String,
        /// Why it is not usable.
        message: String,
    },
    /// A store URL with credentials in it (`user:key@`, or a `?` query such as a SAS token).
    /// The URL itself is not repeated: it would show the secret.
    #[error(
        "the store URL ({scheme}://…) holds credentials (user:key@ or a ?query such as a SAS token), which would show wherever the URL does: put them in the environment instead — for az://, AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_KEY, or a managed identity (AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE); for s3://, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an instance or web-identity role"
    )]
    CredentialsInUrl {
        /// The URL's scheme (`az`, `s3`, `https`, ...).
        scheme: String,
    },
    /// A key that does not exist.
    #[error("{0} does not exist in the store")]
    NotFound(String),
    /// Any other failure of the object store (network, permissions, ...).
    #[error("store operation on {key} failed: {message}")]
    Store {
        /// The key involved.
        key: String,
        /// The object store's error, on one line.
        message: String,
    },
    /// The async runtime could not start.
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// An object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Key relative to the store's root (what [`Store::get`] takes).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// A store: a local folder, or an object store with the prefix fleetscore's keys live under.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Backend>,
    location: String,
    /// Counts the requests made through this handle, when it is a [`Store::counting`] one.
    counter: Option<Arc<RequestCounter>>,
    /// Simulated latency and rate limits, for benchmarks (see [`sim`]).
    sim: Option<Arc<sim::Simulator>>,
}

/// Requests made to a store, by kind: what an object store bills and rate-limits by. A
/// [`Store::get_many`] of n keys is n GETs; a [`Store::list`] is one LIST however many pages the
/// object store answers it in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// Objects read whole.
    pub get: u64,
    /// Ranged reads (part of an object each).
    pub get_range: u64,
    /// Objects written.
    pub put: u64,
    /// Listings.
    pub list: u64,
    /// Objects deleted.
    pub delete: u64,
}

impl Requests {
    /// Every request.
    pub fn total(&self) -> u64 {
        self.get + self.get_range + self.put + self.list + self.delete
    }
}

/// The counters behind a [`Store::counting`] handle.
#[derive(Debug, Default)]
pub struct RequestCounter {
    get: AtomicU64,
    get_range: AtomicU64,
    put: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
}

impl RequestCounter {
    /// The requests counted so far.
    pub fn requests(&self) -> Requests {
        Requests {
            get: self.get.load(Ordering::Relaxed),
            get_range: self.get_range.load(Ordering::Relaxed),
            put: self.put.load(Ordering::Relaxed),
            list: self.list.load(Ordering::Relaxed),
            delete: self.delete.load(Ordering::Relaxed),
        }
    }
}

enum Backend {
    /// A local folder, on `std::fs` directly (see [`local`]).
    Local(local::LocalDir),
    /// Anything else, through object_store.
    Remote(Remote),
}

/// An object store, the prefix fleetscore's keys live under, and the runtime that drives its
/// I/O (`block_on` is called from any thread).
struct Remote {
    inner: Arc<dyn ObjectStore>,
    prefix: Path,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.location)
            .finish()
    }
}

impl Store {
    /// Opens a store from a local folder path (created if missing) or a URL: `file:///dir`,
    /// `memory:///`, `az://container/prefix`, `s3://bucket/prefix`. Cloud credentials come from
    /// the usual environment variables (`AZURE_STORAGE_ACCOUNT_NAME`, `AWS_ACCESS_KEY_ID`, ...,
    /// `AZURE_STORAGE_USE_EMULATOR=true` for Azurite), never from the URL: one with
    /// credentials in it is refused ([`Error::CredentialsInUrl`]).
    pub fn open(location: &str) -> Result<Store> {
        let bad = |message: String| Error::Location {
            location: location.to_string(),
            message,
        };
        let local = |dir: &std::path::Path| {
            local::LocalDir::open(dir)
                .map(|d| Store {
                    backend: Arc::new(Backend::Local(d)),
                    location: location.to_string(),
                    counter: None,
                    sim: None,
                })
                .map_err(|e| bad(e.to_string()))
        };
        let sim = sim::Simulator::from_env().map_err(bad)?.map(Arc::new);
        let with_sim = |store: Store| Store {
            sim: sim.clone(),
            ..store
        };
        if !location.contains("://") {
            return local(std::path::Path::new(location)).map(with_sim);
        }
        // Before anything echoes the location: a URL with credentials in it is refused without
        // showing it.
        if let Some((scheme, rest)) = location.split_once("://") {
            let authority = rest.split('/').next().unwrap_or("");
            if authority.contains('@') || rest.contains('?') {
                return Err(Error::CredentialsInUrl {
                    scheme: scheme.to_string(),
                });
            }
        }
        let url = url::Url::parse(location).map_err(|e| bad(e.to_string()))?;
        if url.scheme() == "file" {
            let dir = url
                .to_file_path()
                .map_err(|()| bad("not a local path".into()))?;
            return local(&dir).map(with_sim);
        }
        let options: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| {
                k.starts_with("AZURE_") || k.starts_with("AWS_") || k.starts_with("GOOGLE_")
            })
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let (inner, prefix) =
            object_store::parse_url_opts(&url, options).map_err(|e| bad(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fleetscore-io")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        Ok(Store {
            backend: Arc::new(Backend::Remote(Remote {
                inner: Arc::from(inner),
                prefix,
                runtime,
            })),
            location: location.to_string(),
            counter: None,
            sim,
        })
    }

    /// The location the store was opened with.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The same store, through a handle that counts the requests made through it (and through
    /// its clones); the counter is returned beside it.
    pub fn counting(&self) -> (Store, Arc<RequestCounter>) {
        let counter = Arc::new(RequestCounter::default());
        let store = Store {
            backend: Arc::clone(&self.backend),
            location: self.location.clone(),
            counter: Some(Arc::clone(&counter)),
            sim: self.sim.clone(),
        };
        (store, counter)
    }

    fn count(&self, kind: fn(&RequestCounter) -> &AtomicU64, n: u64) {
        if let Some(c) = &self.counter {
            kind(c).fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Waits as the simulated store would for `requests` requests moving `bytes` bytes.
    fn simulate(&self, requests: u64, bytes: u64) {
        if let Some(s) = &self.sim {
            s.wait(requests, bytes);
        }
    }

    /// Writes `bytes` under `key`, replacing what was there (atomically: readers see the old
    /// object or the new one, never a part).
    pub fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.count(|c| &c.put, 1);
        self.simulate(1, bytes.len() as u64);
        match &*self.backend {
            Backend::Local(dir) => dir.put(key, &bytes),
            Backend::Remote(r) => r
                .runtime
                .block_on(r.inner.put(&r.path(key), PutPayload::from(bytes)))
                .map(|_| ())
                .map_err(|e| wrap(key, e)),
        }
    }

    /// Writes `bytes` under `key` only if nothing is there; returns whether it wrote. Of two
    /// writers racing for one key, exactly one wins.
    pub fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<bool> {
        self.count(|c| &c.put, 1);
        self.simulate(1, bytes.len() as u64);
        match &*self.backend {
            Backend::Local(dir) => dir.put_if_absent(key, &bytes),
            Backend::Remote(r) => match r.runtime.block_on(r.inner.put_opts(
                &r.path(key),
                PutPayload::from(bytes),
                PutMode::Create.into(),
            )) {
                Ok(_) => Ok(true),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                Err(e) => Err(wrap(key, e)),
            },
        }
    }

    /// Reads the object under `key`.
    pub fn get(&self, key: &str) -> Result<Bytes> {
        self.count(|c| &c.get, 1);
        let got = match &*self.backend {
            Backend::Local(dir) => dir.get(key),
            Backend::Remote(r) => {
                let path = r.path(key);
                r.runtime
                    .block_on(async { r.inner.get(&path).await?.bytes().await })
                    .map_err(|e| wrap(key, e))
            }
        };
        self.simulate(1, got.as_ref().map_or(0, |b| b.len() as u64));
        got
    }

    /// Reads parts of the object under `key` (each range non-empty), one ranged GET per range (a caller wanting fewer
    /// requests merges nearby ranges first): from a remote store up to 32 at once.
    pub fn get_ranges(&self, key: &str, ranges: &[std::ops::Range<u64>]) -> Result<Vec<Bytes>> {
        use futures::StreamExt;
        self.count(|c| &c.get_range, ranges.len() as u64);
        let got = match &*self.backend {
            Backend::Local(dir) => dir.get_ranges(key, ranges),
            Backend::Remote(r) => {
                let path = r.path(key);
                let results: Vec<object_store::Result<Bytes>> = r.runtime.block_on(
                    futures::stream::iter(ranges.iter().map(|range| {
                        let path = &path;
                        async move { r.inner.get_range(path, range.clone()).await }
                    }))
                    .buffered(32)
                    .collect(),
                );
                // A range past the end comes back short from HTTP stores: an error, as locally.
                results
                    .into_iter()
                    .zip(ranges)
                    .map(|(res, range)| match res {
                        Ok(b) if b.len() as u64 == range.end - range.start => Ok(b),
                        Ok(b) => Err(Error::Store {
                            key: key.to_string(),
                            message: format!(
                                "range {}..{} returned {} bytes: the object is shorter",
                                range.start,
                                range.end,
                                b.len()
                            ),
                        }),
                        Err(e) => Err(wrap(key, e)),
                    })
                    .collect()
            }
        };
        let bytes = ranges.iter().map(|r| r.end - r.start).sum();
        self.simulate(ranges.len() as u64, bytes);
        got
    }

    /// Reads many objects: from a remote store up to 32 requests in flight at once (what
    /// planning a run over thousands of models, or a task's model files, needs), from a local
    /// folder one after the other on this thread.
    pub fn get_many(&self, keys: &[String]) -> Result<Vec<Bytes>> {
        use futures::StreamExt;
        self.count(|c| &c.get, keys.len() as u64);
        let r = match &*self.backend {
            Backend::Local(dir) => {
                let got: Result<Vec<Bytes>> = keys.iter().map(|k| dir.get(k)).collect();
                let bytes = got
                    .as_ref()
                    .map_or(0, |all| all.iter().map(|b| b.len() as u64).sum());
                self.simulate(keys.len() as u64, bytes);
                return got;
            }
            Backend::Remote(r) => r,
        };
        let results: Vec<object_store::Result<Bytes>> = r.runtime.block_on(
            futures::stream::iter(keys.iter().map(|k| {
                let path = r.path(k);
                async move { r.inner.get(&path).await?.bytes().await }
            }))
            .buffered(32)
            .collect(),
        );
        let bytes = results.iter().flatten().map(|b| b.len() as u64).sum();
        self.simulate(keys.len() as u64, bytes);
        results
            .into_iter()
            .zip(keys)
            .map(|(res, k)| res.map_err(|e| wrap(k, e)))
            .collect()
    }

    /// Reads the object under `key`, or `None` if there is none.
    pub fn get_opt(&self, key: &str) -> Result<Option<Bytes>> {
        match self.get(key) {
            Ok(b) => Ok(Some(b)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every object under `prefix` (recursively), sorted by key.
    pub fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        self.count(|c| &c.list, 1);
        self.simulate(1, 0);
        let mut entries = match &*self.backend {
            Backend::Local(dir) => dir.list(prefix)?,
            Backend::Remote(r) => {
                let metas: Vec<object_store::ObjectMeta> = r
                    .runtime
                    .block_on(r.inner.list(Some(&r.path(prefix))).try_collect())
                    .map_err(|e| wrap(prefix, e))?;
                metas
                    .into_iter()
                    .map(|m| Entry {
                        key: r.key_of(&m.location),
                        size: m.size,
                    })
                    .collect()
            }
        };
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }

    /// Deletes the object under `key` (no error if it is absent).
    pub fn delete(&self, key: &str) -> Result<()> {
        self.count(|c| &c.delete, 1);
        self.simulate(1, 0);
        match &*self.backend {
            Backend::Local(dir) => dir.delete(key),
            Backend::Remote(r) => match r.runtime.block_on(r.inner.delete(&r.path(key))) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(wrap(key, e)),
            },
        }
    }
}

impl Remote {
    fn path(&self, key: &str) -> Path {
        let mut parts: Vec<String> = self
            .prefix
            .parts()
            .map(|p| p.as_ref().to_string())
            .collect();
        parts.extend(key.split('/').filter(|s| !s.is_empty()).map(str::to_string));
        Path::from_iter(parts)
    }

    fn key_of(&self, path: &Path) -> String {
        let skip = self.prefix.parts().count();
        path.parts()
            .skip(skip)
            .map(|p| p.as_ref().to_string())
            .collect::<Vec<_>>()
            .join("/")
    }
}

fn wrap(key: &str, e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::NotFound(key.to_string()),
        other => Error::Store {
            key: key.to_string(),
            message: condense(&other),
        },
    }
}

/// object_store's errors repeat their sources and quote whole XML bodies; users get one line:
/// the request that failed and the service's error code.
fn condense(e: &object_store::Error) -> String {
    let full = e.to_string();
    let head = full.split(": <?xml").next().unwrap_or(&full);
    let head = head.lines().next().unwrap_or(head).trim();
    let code = full
        .split("<Code>")
        .nth(1)
        .and_then(|rest| rest.split("</Code>").next());
    match code {
        Some("ContainerNotFound") => {
            format!("{head} (ContainerNotFound: create the container first)")
        }
        Some(code) => format!("{head} ({code})"),
        None => head.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_folder_round_trip_and_listing() {
        let dir = std::env::temp_dir().join(format!("fleetscore-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(dir.to_str().unwrap()).unwrap();
        round_trip(&store);
        // The files are where a user would look for them, and no temporary file is left.
        assert!(dir.join("a/b/one.txt").exists());
        let names: Vec<_> = std::fs::read_dir(dir.join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        // A key cannot leave the folder.
        assert!(store.put("a/../../escape", b"x".to_vec()).is_err());
        assert!(store.get("..").is_err());
        // The same folder through a file:// URL.
        let url = format!("file://{}", dir.canonicalize().unwrap().display());
        let same = Store::open(&url).unwrap();
        assert_eq!(&same.get("a/b/one.txt").unwrap()[..], b"1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Against Azurite when `scripts/test` provides it.
    #[test]
    fn azure_blob_round_trip_and_listing() {
        let Ok(url) = std::env::var("FLEETSCORE_TEST_AZURE_STORE") else {
            eprintln!("FLEETSCORE_TEST_AZURE_STORE not set: Azure Blob not checked");
            return;
        };
        let store = Store::open(&format!("{url}/store-unit-{}", std::process::id())).unwrap();
        round_trip(&store);
    }

    /// Against an S3-compatible server (moto) when `scripts/test` provides it.
    #[test]
    fn s3_round_trip_and_listing() {
        let Ok(url) = std::env::var("FLEETSCORE_TEST_S3_STORE") else {
            eprintln!("FLEETSCORE_TEST_S3_STORE not set: S3 not checked");
            return;
        };
        let store = Store::open(&format!("{url}/store-unit-{}", std::process::id())).unwrap();
        round_trip(&store);
    }

    #[test]
    fn memory_round_trip_and_listing() {
        round_trip(&Store::open("memory:///").unwrap());
    }

    /// Of many writers racing for one key, exactly one wins, and the object is whole.
    #[test]
    fn put_if_absent_has_one_winner() {
        let dir = std::env::temp_dir().join(format!("fleetscore-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(dir.to_str().unwrap()).unwrap();
        let wins: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8u8)
                .map(|i| {
                    let store = &store;
                    s.spawn(move || store.put_if_absent("k/v", vec![i; 100_000]).unwrap())
                })
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(wins, 1);
        let got = store.get("k/v").unwrap();
        assert_eq!(got.len(), 100_000);
        assert!(got.iter().all(|&b| b == got[0]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_locations_are_clear_errors() {
        let err = Store::open("gopher://x/y").unwrap_err().to_string();
        assert!(
            err.starts_with("bad store location \"gopher://x/y\""),
            "{err}"
        );
    }

    #[test]
    fn a_url_with_credentials_is_refused_without_showing_them() {
        for url in [
            "az://account:c2VjcmV0LWtleQ==@container/prefix",
            "s3://AKIAEXAMPLE:secret-key@bucket/prefix",
            "https://account.blob.core.windows.net/container?sv=2024&sig=secret-sig",
            "az://container/prefix?sig=secret-sig",
        ] {
            let err = Store::open(url).unwrap_err().to_string();
            assert!(err.contains("holds credentials"), "{err}");
            assert!(err.contains("AZURE_STORAGE_SAS_KEY"), "{err}");
            assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
            for secret in ["c2VjcmV0", "secret-key", "secret-sig", "AKIAEXAMPLE"] {
                assert!(!err.contains(secret), "{err}");
            }
        }
    }

    fn round_trip(store: &Store) {
        store.put("a/b/one.txt", b"1".to_vec()).unwrap();
        store.put("a/two.txt", b"22".to_vec()).unwrap();
        assert_eq!(&store.get("a/b/one.txt").unwrap()[..], b"1");
        assert!(store.get_opt("a/missing").unwrap().is_none());
        let keys: Vec<String> = store
            .list("a")
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, ["a/b/one.txt", "a/two.txt"]);
        assert!(!store.put_if_absent("a/two.txt", b"x".to_vec()).unwrap());
        assert!(store.put_if_absent("a/three.txt", b"3".to_vec()).unwrap());
        store.delete("a/two.txt").unwrap();
        store.delete("a/two.txt").unwrap();
        assert!(matches!(store.get("a/two.txt"), Err(Error::NotFound(_))));
        let many = store
            .get_many(&["a/three.txt".to_string(), "a/b/one.txt".to_string()])
            .unwrap();
        assert_eq!([&many[0][..], &many[1][..]], [b"3", b"1"]);
        assert!(matches!(
            store.get_many(&["a/nope".to_string()]),
            Err(Error::NotFound(k)) if k == "a/nope"
        ));
        store.put("a/ranged", b"0123456789".to_vec()).unwrap();
        let parts = store.get_ranges("a/ranged", &[2..5, 0..1, 9..10]).unwrap();
        let parts: Vec<&[u8]> = parts.iter().map(|b| &b[..]).collect();
        assert_eq!(parts, [&b"234"[..], b"0", b"9"]);
        assert!(store.get_ranges("a/ranged", &[8..12, 0..1]).is_err());
        assert!(matches!(
            store.get_ranges("a/nope", &[0..1, 1..2]),
            Err(Error::NotFound(_))
        ));
    }
}
