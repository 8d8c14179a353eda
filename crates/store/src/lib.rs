//! fleetscore's storage: one key layout ([`layout`]) on any object store — a local folder by
//! default, Azure Blob (`az://container/prefix`), S3 (`s3://bucket/prefix`) or memory — behind a
//! small synchronous API, so that callers (workers on threads) need no async runtime of their
//! own.
#![warn(missing_docs)]

pub mod layout;

use std::sync::Arc;

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

/// A store: an object store, the prefix fleetscore's keys live under, and the runtime that
/// drives its I/O.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: Path,
    location: String,
    /// Drives the object store's async I/O; `block_on` is called from any thread.
    runtime: Arc<tokio::runtime::Runtime>,
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
    /// `AZURE_STORAGE_USE_EMULATOR=true` for Azurite).
    pub fn open(location: &str) -> Result<Store> {
        let bad = |message: String| Error::Location {
            location: location.to_string(),
            message,
        };
        let url = if location.contains("://") {
            url::Url::parse(location).map_err(|e| bad(e.to_string()))?
        } else {
            let dir = std::path::Path::new(location);
            std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
            let abs = std::fs::canonicalize(dir).map_err(|e| bad(e.to_string()))?;
            url::Url::from_directory_path(&abs).map_err(|_| bad("not an absolute path".into()))?
        };
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
            inner: Arc::from(inner),
            prefix,
            location: location.to_string(),
            runtime: Arc::new(runtime),
        })
    }

    /// The location the store was opened with.
    pub fn location(&self) -> &str {
        &self.location
    }

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

    fn wrap(key: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound(key.to_string()),
            other => Error::Store {
                key: key.to_string(),
                message: condense(&other),
            },
        }
    }

    /// Writes `bytes` under `key`, replacing what was there (atomically: readers see the old
    /// object or the new one, never a part).
    pub fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let path = self.path(key);
        self.runtime
            .block_on(self.inner.put(&path, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|e| Store::wrap(key, e))
    }

    /// Writes `bytes` under `key` only if nothing is there; returns whether it wrote.
    pub fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<bool> {
        let path = self.path(key);
        match self.runtime.block_on(self.inner.put_opts(
            &path,
            PutPayload::from(bytes),
            PutMode::Create.into(),
        )) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(Store::wrap(key, e)),
        }
    }

    /// Reads the object under `key`.
    pub fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path(key);
        self.runtime
            .block_on(async { self.inner.get(&path).await?.bytes().await })
            .map_err(|e| Store::wrap(key, e))
    }

    /// Reads many objects, up to 32 requests in flight at once (what planning a run over
    /// thousands of models, or a task's model files, needs from a remote store).
    pub fn get_many(&self, keys: &[String]) -> Result<Vec<Bytes>> {
        use futures::StreamExt;
        let results: Vec<object_store::Result<Bytes>> = self.runtime.block_on(
            futures::stream::iter(keys.iter().map(|k| {
                let path = self.path(k);
                async move { self.inner.get(&path).await?.bytes().await }
            }))
            .buffered(32)
            .collect(),
        );
        results
            .into_iter()
            .zip(keys)
            .map(|(r, k)| r.map_err(|e| Store::wrap(k, e)))
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
        let path = self.path(prefix);
        let metas: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(self.inner.list(Some(&path)).try_collect())
            .map_err(|e| Store::wrap(prefix, e))?;
        let mut entries: Vec<Entry> = metas
            .into_iter()
            .map(|m| Entry {
                key: self.key_of(&m.location),
                size: m.size,
            })
            .collect();
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(entries)
    }

    /// Deletes the object under `key` (no error if it is absent).
    pub fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        match self.runtime.block_on(self.inner.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Store::wrap(key, e)),
        }
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
        // The files are where a user would look for them.
        assert!(dir.join("a/b/one.txt").exists());
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
    fn bad_locations_are_clear_errors() {
        let err = Store::open("gopher://x/y").unwrap_err().to_string();
        assert!(
            err.starts_with("bad store location \"gopher://x/y\""),
            "{err}"
        );
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
    }
}
