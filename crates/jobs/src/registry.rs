//! The model registry: scikit-learn files validated with the safe loader and stored under their
//! (device, tag) with a content-hash version. Re-importing the same bytes changes nothing; new
//! bytes become a new current version and old versions stay.
//!
//! Which version is current is kept in one catalog per device bucket (see
//! [`fleetscore_store::layout`]), updated with conditional puts so that concurrent imports
//! never lose each other's changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use fleetscore_models::Model;
use fleetscore_store::{Store, layout};

use crate::error::{Error, Result};

/// What the registry knows about one model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Device id.
    pub device: String,
    /// Sensor tag.
    pub tag: String,
    /// Content hash of the file (first 16 hex digits of its SHA-256).
    pub version: String,
    /// File format, e.g. `pickle, protocol 3`.
    pub format: String,
    /// The estimator in one line.
    pub estimator: String,
    /// Features per row.
    pub n_features: usize,
    /// Feature names, if the model stores them.
    pub feature_names: Option<Vec<String>>,
    /// Reading columns that feed the model in a run, in its feature order (configuration, set
    /// at import; raw readings have one, `value`).
    #[serde(default = "default_features")]
    pub features: Vec<String>,
    /// scikit-learn version that saved it.
    pub sklearn_version: Option<String>,
    /// Size of the file.
    pub bytes: u64,
    /// Where it was imported from.
    pub source: String,
    /// When it was imported (RFC 3339).
    pub imported_at: String,
    /// Where its bytes are in a model pack, if the import that stored it wrote one (the only
    /// copy of them); `None`: in the version's own file. (In stores written before packs held
    /// the only copy, catalogs name a pack holding a copy and version metadata names none.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<PackSlot>,
    /// How fleetscore fitted it, when `fleetscore train` did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<Training>,
}

/// How a model version was fitted by `fleetscore train`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Training {
    /// The training run.
    pub run: String,
    /// The training window's start (RFC 3339).
    pub from: String,
    /// Its end (RFC 3339, exclusive).
    pub to: String,
    /// Rows it was fitted on.
    pub rows: u64,
    /// The estimator and its hyper-parameters, with scikit-learn's names.
    pub params: BTreeMap<String, serde_json::Value>,
    /// What the fit measured (support vectors, iterations, outliers among the training rows, ...).
    pub metrics: BTreeMap<String, f64>,
}

/// Where a model file's bytes are inside a model pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackSlot {
    /// The pack's key.
    pub key: String,
    /// The first byte of the file in it.
    pub offset: u64,
    /// The file's length.
    pub len: u64,
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// A new version, now current.
    New,
    /// A version stored before, made current again.
    Restored,
    /// Already the current version: nothing changed.
    Unchanged,
}

/// The reading columns a model is fed when none are configured: the raw value.
pub fn default_features() -> Vec<String> {
    vec![READING_VALUE.to_string()]
}

/// The column of raw readings.
pub const READING_VALUE: &str = "value";

/// Where a model's rows come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureSource {
    /// Raw readings: one row per reading, the feature is its `value`.
    Readings,
    /// Closed windows from `features/`: one row per window, the features are statistics
    /// (`mean`, `std`, ...).
    Windows,
}

impl FeatureSource {
    /// The source of a model's feature mapping; a name neither source has, or a mix of the
    /// two, is an error naming it.
    pub fn of(features: &[String]) -> Result<FeatureSource> {
        let stats = fleetscore_table::windows::STATS;
        let explain = || {
            format!(
                "a model is fed the raw `{READING_VALUE}` or statistics of windows ({})",
                stats.join(", ")
            )
        };
        if let Some(f) = features
            .iter()
            .find(|f| *f != READING_VALUE && !stats.contains(&f.as_str()))
        {
            return Err(Error::Invalid(format!(
                "unknown feature `{f}`: {}",
                explain()
            )));
        }
        match features.iter().filter(|f| *f == READING_VALUE).count() {
            0 => Ok(FeatureSource::Windows),
            n if n == features.len() => Ok(FeatureSource::Readings),
            _ => Err(Error::Invalid(format!(
                "features {} mix raw readings and windows: {}",
                features.join(","),
                explain()
            ))),
        }
    }
}

/// The version of a model file: its content hash.
pub fn version_of(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_meta(key: &str, bytes: &[u8]) -> Result<ModelMeta> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        what: key.to_string(),
        message: e.to_string(),
    })
}

/// One device bucket's catalog: the current version of every model of its devices.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Catalog {
    generation: u64,
    /// Sorted by (device, tag).
    models: Vec<ModelMeta>,
}

impl Catalog {
    fn find(&self, device: &str, tag: &str) -> std::result::Result<usize, usize> {
        self.models
            .binary_search_by(|m| (m.device.as_str(), m.tag.as_str()).cmp(&(device, tag)))
    }

    fn upsert(&mut self, meta: ModelMeta) {
        match self.find(&meta.device, &meta.tag) {
            Ok(i) => self.models[i] = meta,
            Err(i) => self.models.insert(i, meta),
        }
    }
}

/// How often a reader lists again when the generation it listed was replaced and cleaned up
/// before it could read it, and how often a writer retries after losing a race.
const CATALOG_ATTEMPTS: usize = 100;

fn parse_catalog(key: &str, bytes: &[u8]) -> Result<Catalog> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        what: key.to_string(),
        message: e.to_string(),
    })
}

/// The newest generation of each bucket's catalog among `entries` (a listing of catalogs).
fn newest_generations(entries: &[fleetscore_store::Entry]) -> BTreeMap<u32, (u64, String)> {
    let mut newest: BTreeMap<u32, (u64, String)> = BTreeMap::new();
    for e in entries {
        if let Some((b, g)) = layout::parse_catalog_key(&e.key)
            && newest.get(&b).is_none_or(|(old, _)| g > *old)
        {
            newest.insert(b, (g, e.key.clone()));
        }
    }
    newest
}

/// The newest catalog of `bucket` (empty before the first import), with the keys of the older
/// generations still stored.
fn latest_catalog(store: &Store, bucket: u32) -> Result<(Catalog, Vec<String>)> {
    for _ in 0..CATALOG_ATTEMPTS {
        let entries = store.list(&layout::catalog_dir(bucket))?;
        let Some((_, (_, key))) = newest_generations(&entries).pop_first() else {
            return Ok((Catalog::default(), Vec::new()));
        };
        // A newer commit may have cleaned this generation up since the listing: list again.
        if let Some(bytes) = store.get_opt(&key)? {
            let older = entries
                .into_iter()
                .map(|e| e.key)
                .filter(|k| *k != key)
                .collect();
            return Ok((parse_catalog(&key, &bytes)?, older));
        }
    }
    Err(Error::Invalid(format!(
        "the catalog of bucket {bucket:02} changed under every one of {CATALOG_ATTEMPTS} reads"
    )))
}

/// Makes `changes` current in `bucket`'s catalog: writes the next generation if no one else
/// has, and otherwise starts again from the winner's. Each version the new generation stops
/// holding is stored under its own metadata first (see [`keep_versions`]): on whichever
/// generation the write wins against, no version leaves the registry.
fn commit_bucket(store: &Store, bucket: u32, changes: &[ModelMeta]) -> Result<()> {
    let mut kept = std::collections::HashSet::new();
    for _ in 0..CATALOG_ATTEMPTS {
        let (mut catalog, older) = latest_catalog(store, bucket)?;
        let previous = catalog.generation;
        let mut replaced = Vec::new();
        for meta in changes {
            if let Ok(i) = catalog.find(&meta.device, &meta.tag) {
                let old = &catalog.models[i];
                if old.version != meta.version
                    && kept.insert((old.device.clone(), old.tag.clone(), old.version.clone()))
                {
                    replaced.push(old.clone());
                }
            }
            catalog.upsert(meta.clone());
        }
        keep_versions(store, &replaced)?;
        catalog.generation += 1;
        let key = layout::catalog(bucket, catalog.generation);
        let bytes = serde_json::to_vec(&catalog).expect("serializable");
        if !store.put_if_absent(&key, bytes)? {
            continue;
        }
        // Cleaning up frees generation numbers: a writer that read generation n long ago may
        // have just created n+1 again after it was deleted, below a newer one. Readers take
        // the newest, so such a write is simply not current: start again from the newest.
        let newest = newest_generations(&store.list(&layout::catalog_dir(bucket))?);
        if newest
            .get(&bucket)
            .is_some_and(|(g, _)| *g > catalog.generation)
        {
            continue;
        }
        // Keep the generation just replaced (a reader may have listed it a moment ago); older
        // ones are dead. Cleaning up is best effort: the next commit tries again.
        for old in older {
            if layout::parse_catalog_key(&old).is_some_and(|(_, g)| g < previous) {
                let _ = store.delete(&old);
            }
        }
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "lost the race to update the catalog of bucket {bucket:02} {CATALOG_ATTEMPTS} times"
    )))
}

/// Stores the metadata of versions a catalog is about to stop holding, under their own keys
/// (on two threads when there are many, each a contiguous half of them). A
/// version current in a catalog has no metadata object of its own until then: its catalog
/// entry is its metadata, so importing new models writes no object per model beyond the pack.
/// Versions stored in the layout before this one keep their metadata there; a copy pack's slot
/// is not kept (such packs are collected, and those versions have files of their own).
fn keep_versions(store: &Store, versions: &[ModelMeta]) -> Result<()> {
    let keep = |m: &ModelMeta| -> Result<()> {
        if store
            .get_opt(&layout::legacy_model_meta(&m.device, &m.tag, &m.version))?
            .is_some()
        {
            return Ok(());
        }
        let mut m = m.clone();
        if m.pack
            .as_ref()
            .is_some_and(|p| layout::is_copy_pack_key(&p.key))
        {
            m.pack = None;
        }
        store.put(
            &layout::model_meta(&m.device, &m.tag, &m.version),
            serde_json::to_vec_pretty(&m).expect("serializable"),
        )?;
        Ok(())
    };
    if versions.len() < 64 {
        return versions.iter().try_for_each(keep);
    }
    std::thread::scope(|s| {
        let workers: Vec<_> = versions
            .chunks(versions.len().div_ceil(2))
            .map(|part| s.spawn(move || part.iter().try_for_each(keep)))
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("metadata writer panicked"))
    })
}

/// A model to import: its bytes, the (device, tag) it is for, where it came from, and what
/// feeds it.
#[derive(Debug, Clone, Copy)]
pub struct NewModel<'a> {
    /// Device id.
    pub device: &'a str,
    /// Sensor tag.
    pub tag: &'a str,
    /// The model file's bytes (pickle or joblib).
    pub bytes: &'a [u8],
    /// Where it came from (a path), kept in its metadata.
    pub source: &'a str,
    /// The reading columns that feed it, in feature order (`None`: the raw `value`).
    pub features: Option<&'a [String]>,
}

/// What importing a model stored: its metadata, and whether it is new.
pub type ImportedFile = (ModelMeta, Imported);

/// Imports many models at once: [`Importer::add`] validates and stores each file, and
/// [`Importer::commit`] makes the new versions current with one catalog update per device
/// bucket (instead of one per model).
pub struct Importer<'s> {
    store: &'s Store,
    /// Each file's load limits (its memory budget among them).
    limits: fleetscore_models::Limits,
    /// Catalogs read so far, with this import's changes applied.
    known: BTreeMap<u32, Catalog>,
    /// Changes not yet committed, per bucket.
    staged: BTreeMap<u32, Vec<ModelMeta>>,
    /// The new versions staged, stored by the commit.
    pending: Vec<Pending>,
    /// Whether this import changed a catalog (so that finishing it collects the copy packs no
    /// catalog refers to any more).
    changed: bool,
}

impl<'s> Importer<'s> {
    /// An import into `store`.
    pub fn new(store: &'s Store) -> Importer<'s> {
        Importer::with_limits(store, fleetscore_models::Limits::default())
    }

    /// An import into `store` that loads each file within `limits`.
    pub fn with_limits(store: &'s Store, limits: fleetscore_models::Limits) -> Importer<'s> {
        Importer {
            store,
            limits,
            known: BTreeMap::new(),
            staged: BTreeMap::new(),
            pending: Vec::new(),
            changed: false,
        }
    }

    /// Models added and not yet committed.
    pub fn staged(&self) -> usize {
        self.staged.values().map(Vec::len).sum()
    }

    fn catalog(&mut self, bucket: u32) -> Result<&mut Catalog> {
        if !self.known.contains_key(&bucket) {
            let (catalog, _) = latest_catalog(self.store, bucket)?;
            self.known.insert(bucket, catalog);
        }
        Ok(self.known.get_mut(&bucket).expect("just inserted"))
    }

    /// Validates `bytes` as a model and stores it as (device, tag)'s next current version
    /// (current once committed). `features` names the reading columns that feed it (default:
    /// the raw `value`, for a model of one feature).
    pub fn add(&mut self, new: &NewModel<'_>) -> Result<ImportedFile> {
        let staged = self.store_file(new)?;
        self.accept(staged)
    }

    /// [`Importer::add`] for a model fleetscore fitted: `training` is kept in its metadata.
    pub fn add_trained(&mut self, new: &NewModel<'_>, training: Training) -> Result<ImportedFile> {
        let staged = self.store_file_with(new, Some(training))?;
        self.accept(staged)
    }

    /// The part of [`Importer::add`] that needs no catalog and writes nothing, and so can run
    /// on many files at once: validates the file, and finds its version's metadata if the
    /// version is stored.
    fn store_file(&self, new: &NewModel<'_>) -> Result<StoredFile> {
        self.store_file_with(new, None)
    }

    /// [`Importer::store_file`], with how fleetscore fitted the model if it did.
    fn store_file_with(
        &self,
        new: &NewModel<'_>,
        training: Option<Training>,
    ) -> Result<StoredFile> {
        let NewModel {
            device,
            tag,
            bytes,
            source,
            features,
        } = *new;
        for (what, id) in [("device", device), ("tag", tag)] {
            fleetscore_core::check_id(what, id).map_err(|e| Error::Invalid(e.0))?;
        }
        let model = Model::from_bytes_within(bytes, &self.limits)?;
        let features = features.map_or_else(default_features, <[String]>::to_vec);
        if features.len() != model.n_features() {
            return Err(Error::Invalid(format!(
                "the model takes {} features but is fed {} reading column{} ({}); name them with --features",
                model.n_features(),
                features.len(),
                if features.len() == 1 { "" } else { "s" },
                features.join(",")
            )));
        }
        FeatureSource::of(&features)?;
        let version = version_of(bytes);
        if let Some((meta_key, existing)) = stored_meta(self.store, device, tag, &version)? {
            let mut meta = parse_meta(&meta_key, &existing)?;
            let refeatured = meta.features != features;
            meta.features = features;
            return Ok(StoredFile {
                meta,
                bytes: None,
                meta_key,
                refeatured,
            });
        }
        let info = model.info();
        let meta = ModelMeta {
            device: device.to_string(),
            tag: tag.to_string(),
            version: version.clone(),
            format: info.format.clone(),
            estimator: info.estimator.clone(),
            n_features: info.n_features,
            feature_names: info.feature_names.clone(),
            features,
            sklearn_version: info.sklearn_version.clone(),
            bytes: bytes.len() as u64,
            source: source.to_string(),
            imported_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            pack: None,
            training,
        };
        Ok(StoredFile {
            meta,
            bytes: Some(bytes.to_vec()),
            meta_key: layout::model_meta(device, tag, &version),
            refeatured: false,
        })
    }

    /// The part of [`Importer::add`] that needs the catalog, in file order: whether the stored
    /// version is new, restored or already current, staged for the next commit unless current.
    fn accept(&mut self, stored: StoredFile) -> Result<ImportedFile> {
        let StoredFile {
            mut meta,
            mut bytes,
            meta_key,
            refeatured,
        } = stored;
        let bucket = layout::bucket(&meta.device);
        let catalog = self.catalog(bucket)?;
        if let Ok(i) = catalog.find(&meta.device, &meta.tag) {
            let current = &catalog.models[i];
            if current.version == meta.version {
                if current.features == meta.features {
                    return Ok((current.clone(), Imported::Unchanged));
                }
                // The current version, fed other columns: its catalog entry is its metadata.
                let features = std::mem::take(&mut meta.features);
                meta = ModelMeta {
                    features,
                    ..current.clone()
                };
                bytes = None;
            }
        }
        if refeatured {
            // A stored version fed other columns now: its metadata says so before it is current.
            self.store.put(
                &meta_key,
                serde_json::to_vec_pretty(&meta).expect("serializable"),
            )?;
        }
        self.catalog(bucket)?.upsert(meta.clone());
        self.staged.entry(bucket).or_default().push(meta.clone());
        let outcome = match bytes {
            Some(bytes) => {
                self.pending.push(Pending {
                    bucket,
                    meta: meta.clone(),
                    bytes,
                });
                Imported::New
            }
            None => Imported::Restored,
        };
        Ok((meta, outcome))
    }

    /// Makes every version added so far current, one catalog update per device bucket. The
    /// new versions' files are stored first (as one model pack when there are at least
    /// [`MIN_PACK_MODELS`] of them), so that a version a catalog names always has its bytes;
    /// each version a catalog stops holding gets its own metadata object first.
    pub fn commit(&mut self) -> Result<()> {
        self.store_new_versions()?;
        while let Some((bucket, changes)) = self.staged.pop_first() {
            if let Err(e) = commit_bucket(self.store, bucket, &changes) {
                self.staged.insert(bucket, changes);
                return Err(e);
            }
            self.changed = true;
            // Other importers may have changed this bucket too: read it again when needed.
            self.known.remove(&bucket);
        }
        Ok(())
    }

    /// Commits, then deletes the copy packs (see [`collect_packs`]) no catalog has referred to
    /// for [`PACK_RETENTION_MS`] (if this import changed a catalog: only then can one have
    /// stopped being referenced). Collecting is best effort, as cleaning up old catalog
    /// generations is: the import is committed either way, and the next import tries again.
    pub fn finish(&mut self) -> Result<()> {
        self.commit()?;
        if std::mem::take(&mut self.changed) {
            let _ = collect_packs(
                self.store,
                PACK_RETENTION_MS,
                chrono::Utc::now().timestamp_millis(),
            );
        }
        Ok(())
    }

    /// Stores the new versions' files: as one pack, sorted by (bucket, device, tag) so that a
    /// task's models lie together (or a lone version's file on its own); the staged catalog
    /// entries, their metadata, say where.
    fn store_new_versions(&mut self) -> Result<()> {
        let mut pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return Ok(());
        }
        pending.sort_by(|a, b| Pending::order(a).cmp(&Pending::order(b)));
        pending.dedup_by(|a, b| Pending::order(a) == Pending::order(b));
        let id = |m: &ModelMeta| (m.device.clone(), m.tag.clone(), m.version.clone());
        let stored = self.store_files_of(&mut pending);
        if let Err(e) = stored {
            // Staged again, so that a retried commit stores them.
            self.pending = pending;
            return Err(e);
        }
        let slots: std::collections::HashMap<_, _> = pending
            .iter()
            .map(|p| (id(&p.meta), p.meta.pack.clone()))
            .collect();
        for meta in self.staged.values_mut().flatten() {
            if let Some(slot) = slots.get(&id(meta)) {
                meta.pack.clone_from(slot);
            }
        }
        Ok(())
    }

    /// Writes the files of `pending`: a pack, which their metadata then names, or one file.
    fn store_files_of(&self, pending: &mut [Pending]) -> Result<()> {
        if pending.len() >= MIN_PACK_MODELS {
            let total = pending.iter().map(|p| p.bytes.len()).sum();
            let mut pack = Vec::with_capacity(total);
            let mut slots = Vec::with_capacity(pending.len());
            for p in pending.iter() {
                slots.push((pack.len() as u64, p.bytes.len() as u64));
                pack.extend_from_slice(&p.bytes);
            }
            let key = layout::pack(&version_of(&pack));
            // Named by its content: an identical pack already there is this one.
            self.store.put_if_absent(&key, pack)?;
            for (p, (offset, len)) in pending.iter_mut().zip(slots) {
                p.meta.pack = Some(PackSlot {
                    key: key.clone(),
                    offset,
                    len,
                });
            }
        } else {
            for p in pending.iter() {
                let m = &p.meta;
                self.store.put(
                    &layout::model_file(&m.device, &m.tag, &m.version),
                    p.bytes.clone(),
                )?;
            }
        }
        Ok(())
    }
}

/// The fewest staged versions a commit writes a pack for: a pack of one file saves nothing.
pub const MIN_PACK_MODELS: usize = 2;

/// How long a copy pack no catalog refers to is kept (a run planned before it was replaced may
/// still be reading it): a day. A run that finds its pack gone reads the model files instead.
pub const PACK_RETENTION_MS: i64 = 24 * 3_600_000;

/// Deletes the copy packs — written before packs held the only copy of their files, so each of
/// their files is also stored on its own — that no catalog has referred to for `retention_ms`
/// (as of `now_ms`), and remembers since when the others have been unreferenced. Returns the
/// packs deleted. (Packs holding the only copy are kept: every version is.)
pub fn collect_packs(store: &Store, retention_ms: i64, now_ms: i64) -> Result<Vec<String>> {
    let copies: Vec<String> = store
        .list(layout::PACKS)?
        .into_iter()
        .map(|e| e.key)
        .filter(|k| layout::is_copy_pack_key(k))
        .collect();
    if copies.is_empty() {
        // Nothing to collect, as in every store of this layout: no catalog is read.
        if store.get_opt(layout::PACKS_UNREFERENCED)?.is_some() {
            store.delete(layout::PACKS_UNREFERENCED)?;
        }
        return Ok(Vec::new());
    }
    let referenced: std::collections::HashSet<String> = list(store)?
        .into_iter()
        .filter_map(|m| m.pack.map(|p| p.key))
        .collect();
    let before: BTreeMap<String, i64> = match store.get_opt(layout::PACKS_UNREFERENCED)? {
        Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        None => BTreeMap::new(),
    };
    let mut after = BTreeMap::new();
    let mut deleted = Vec::new();
    for key in copies {
        if referenced.contains(&key) {
            continue;
        }
        let since = before.get(&key).copied().unwrap_or(now_ms);
        if now_ms - since >= retention_ms {
            store.delete(&key)?;
            deleted.push(key);
        } else {
            after.insert(key, since);
        }
    }
    if after != before {
        store.put(
            layout::PACKS_UNREFERENCED,
            serde_json::to_vec_pretty(&after).expect("serializable"),
        )?;
    }
    Ok(deleted)
}

/// A new version staged for the next commit, which stores its file (in the commit's pack, or
/// on its own) before the catalog entry naming it.
struct Pending {
    bucket: u32,
    meta: ModelMeta,
    bytes: Vec<u8>,
}

impl Pending {
    /// The order of a pack's files: by (bucket, device, tag), so that a task's models lie
    /// together; then by version.
    fn order(&self) -> (u32, &str, &str, &str) {
        let m = &self.meta;
        (self.bucket, &m.device, &m.tag, &m.version)
    }
}

/// A model file validated, with its metadata: of a version with a metadata object of its own
/// (found under `meta_key`), or else new — unless its catalog holds it as current, which
/// [`Importer::accept`] finds.
struct StoredFile {
    /// Its metadata, with the features this import feeds it.
    meta: ModelMeta,
    /// The file, if the version is new (a stored version's bytes are where its metadata says).
    bytes: Option<Vec<u8>>,
    /// Where its metadata object is (for a new version, would be).
    meta_key: String,
    /// Whether it was stored before fed other columns (its metadata is rewritten if it becomes
    /// current).
    refeatured: bool,
}

/// Validates `bytes` as a model and stores it as the current version for (device, tag). (For
/// many models, an [`Importer`] updates each catalog once.)
pub fn import(store: &Store, new: &NewModel<'_>) -> Result<ImportedFile> {
    let mut importer = Importer::new(store);
    let imported = importer.add(new)?;
    importer.finish()?;
    Ok(imported)
}

/// A model file to import, and the (device, tag) it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFile {
    /// The file.
    pub path: PathBuf,
    /// Device id.
    pub device: String,
    /// Sensor tag.
    pub tag: String,
}

/// A file [`model_files`] passed over, and why.
pub type Skipped = (PathBuf, String);

/// The model files `path` names — the file itself, or a folder's files in name order — with
/// (device, tag) from each file name by `pattern` (see [`match_pattern`]); the files whose names
/// do not match, or are not UTF-8, come back apart with the reason, so the caller can say it
/// skipped them.
pub fn model_files(path: &Path, pattern: &str) -> Result<(Vec<ModelFile>, Vec<Skipped>)> {
    let entries: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::Invalid(format!("cannot read {}: {e}", path.display())))?
            .filter_map(|e| e.ok())
            // The entry's type costs no call per file; only links are followed to see.
            .filter(|e| {
                e.file_type()
                    .is_ok_and(|t| t.is_file() || (t.is_symlink() && e.path().is_file()))
            })
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    let (mut files, mut skipped) = (Vec::new(), Vec::new());
    for p in entries {
        // A name that is not UTF-8 cannot name a device: replacing its bytes would give two
        // files one id.
        let Some(name) = p.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            skipped.push((p, "the name is not valid UTF-8".into()));
            continue;
        };
        match match_pattern(pattern, &name) {
            Some((device, tag)) => files.push(ModelFile {
                path: p,
                device,
                tag,
            }),
            None => skipped.push((p, format!("the name does not match {pattern:?}"))),
        }
    }
    Ok((files, skipped))
}

/// Models staged before [`import_files`] commits them: one catalog write per device bucket and
/// batch, one model pack per batch, and an interrupted import keeps what it committed. (A run's
/// task reads one range of each pack holding its models: fewer, larger packs mean fewer reads.)
pub const IMPORT_BATCH: usize = 50_000;

/// The most bytes of model files an import batch holds (and packs) at once, beyond its first
/// file.
pub const IMPORT_BATCH_BYTES: u64 = 256 << 20;

/// Imports model files with `importer`: each read and validated on its own (one bad
/// file fails alone, with its reason, and the others are imported), made current
/// [`IMPORT_BATCH`] at a time. Files are read and validated by two threads; outcomes
/// are decided and reported in file order. `each` hears every file's outcome; a store failure
/// while committing stops the import with that error.
pub fn import_files(
    importer: &mut Importer<'_>,
    files: &[ModelFile],
    features: Option<&[String]>,
    each: &mut dyn FnMut(&ModelFile, &Result<ImportedFile>),
) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 2));
    // A batch's files are held until its commit packs them: at most IMPORT_BATCH files and,
    // beyond the first, IMPORT_BATCH_BYTES.
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, f) in files.iter().enumerate() {
        let size = std::fs::metadata(&f.path).map_or(0, |m| m.len());
        if i > start && (i - start >= IMPORT_BATCH || bytes + size > IMPORT_BATCH_BYTES) {
            batches.push(&files[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    batches.push(&files[start..]);
    for batch in batches {
        let stored = store_files(importer, batch, features, threads);
        for (f, stored) in batch.iter().zip(stored) {
            let result = stored.and_then(|s| {
                importer
                    .accept(s)
                    .map_err(|e| Error::Invalid(format!("{}: {e}", f.path.display())))
            });
            each(f, &result);
        }
        importer.commit()?;
    }
    importer.finish()
}

/// [`Importer::store_file`] for each of `files`, on `threads` threads; results in file order.
fn store_files(
    importer: &Importer<'_>,
    files: &[ModelFile],
    features: Option<&[String]>,
    threads: usize,
) -> Vec<Result<StoredFile>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let one = |f: &ModelFile| {
        let source = f.path.display().to_string();
        std::fs::read(&f.path)
            .map_err(|e| Error::Invalid(format!("cannot read {source}: {e}")))
            .and_then(|bytes| {
                importer
                    .store_file(&NewModel {
                        device: &f.device,
                        tag: &f.tag,
                        bytes: &bytes,
                        source: &source,
                        features,
                    })
                    .map_err(|e| Error::Invalid(format!("{source}: {e}")))
            })
    };
    let mut results: Vec<(usize, Result<StoredFile>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(f) = files.get(i) else { return done };
                        done.push((i, one(f)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("import thread panicked"))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// The current version of (device, tag), if any.
pub fn current(store: &Store, device: &str, tag: &str) -> Result<Option<ModelMeta>> {
    let (catalog, _) = latest_catalog(store, layout::bucket(device))?;
    Ok(catalog
        .find(device, tag)
        .ok()
        .map(|i| catalog.models[i].clone()))
}

/// Every (device, tag)'s current version, sorted by device then tag: one listing and, when a
/// snapshot of the newest catalogs is stored, one read; otherwise one read per device bucket,
/// after which the snapshot is written for the next reader.
pub fn list(store: &Store) -> Result<Vec<ModelMeta>> {
    for _ in 0..CATALOG_ATTEMPTS {
        let entries = store.list(layout::CATALOGS)?;
        let newest = newest_generations(&entries);
        // The newest generations, with their sizes, name the snapshot's content.
        let mut hasher = Sha256::new();
        for e in &entries {
            if let Some((b, g)) = layout::parse_catalog_key(&e.key)
                && newest.get(&b).is_some_and(|(n, _)| *n == g)
            {
                hasher.update(format!("{b}:{g}:{}\n", e.size));
            }
        }
        let fingerprint: String = hasher.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let snapshot = layout::catalog_snapshot(&fingerprint);
        if entries.iter().any(|e| e.key == snapshot)
            && let Some(bytes) = store.get_opt(&snapshot)?
        {
            return serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                what: snapshot,
                message: e.to_string(),
            });
        }
        let keys: Vec<String> = newest.into_values().map(|(_, k)| k).collect();
        let catalogs = match store.get_many(&keys) {
            Ok(c) => c,
            // A newer commit cleaned a listed generation up: list again.
            Err(fleetscore_store::Error::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for (key, bytes) in keys.iter().zip(catalogs) {
            out.extend(parse_catalog(key, &bytes)?.models);
        }
        out.sort_by(|a, b| (&a.device, &a.tag).cmp(&(&b.device, &b.tag)));
        if !keys.is_empty() {
            // For the next reader; best effort, as is removing the snapshots it replaces.
            let bytes = serde_json::to_vec(&out).expect("serializable");
            if store.put_if_absent(&snapshot, bytes).is_ok() {
                for e in &entries {
                    if layout::parse_catalog_snapshot_key(&e.key).is_some() && e.key != snapshot {
                        let _ = store.delete(&e.key);
                    }
                }
            }
        }
        return Ok(out);
    }
    Err(Error::Invalid(format!(
        "the catalogs changed under every one of {CATALOG_ATTEMPTS} reads"
    )))
}

/// Every stored version of (device, tag), oldest import first: the current one from its
/// catalog, and the others from one listing of the device's models and one read each.
pub fn versions(store: &Store, device: &str, tag: &str) -> Result<Vec<ModelMeta>> {
    let current = current(store, device, tag)?;
    let mut out: Vec<ModelMeta> = current.iter().cloned().collect();
    for entry in store.list(&layout::device_models(device))? {
        if let Some((t, version)) = layout::parse_model_meta_key(device, &entry.key)
            && t == tag
            && current.as_ref().is_none_or(|c| c.version != version)
        {
            out.push(parse_meta(&entry.key, &store.get(&entry.key)?)?);
        }
    }
    out.sort_by(|a, b| a.imported_at.cmp(&b.imported_at));
    Ok(out)
}

/// The metadata of version `version` of (device, tag): its own object, or its catalog entry
/// while it is current.
pub fn version_meta(store: &Store, device: &str, tag: &str, version: &str) -> Result<ModelMeta> {
    if let Some((key, bytes)) = stored_meta(store, device, tag, version)? {
        return parse_meta(&key, &bytes);
    }
    current(store, device, tag)?
        .filter(|m| m.version == version)
        .ok_or_else(|| {
            Error::Store(fleetscore_store::Error::NotFound(layout::model_meta(
                device, tag, version,
            )))
        })
}

/// A stored version's metadata, and its key: this layout's, or the one before it.
fn stored_meta(
    store: &Store,
    device: &str,
    tag: &str,
    version: &str,
) -> Result<Option<(String, bytes::Bytes)>> {
    for key in [
        layout::model_meta(device, tag, version),
        layout::legacy_model_meta(device, tag, version),
    ] {
        if let Some(bytes) = store.get_opt(&key)? {
            return Ok(Some((key, bytes)));
        }
    }
    Ok(None)
}

/// The bytes of a model version, from its pack (checked against the version, its content
/// hash) or its own file.
pub fn model_bytes(store: &Store, device: &str, tag: &str, version: &str) -> Result<Vec<u8>> {
    let meta = version_meta(store, device, tag, version)?;
    let Some(slot) = meta.pack.filter(|p| !layout::is_copy_pack_key(&p.key)) else {
        return own_file(store, device, tag, version);
    };
    let range = slot.offset..slot.offset + slot.len;
    let bytes = store
        .get_ranges(&slot.key, std::slice::from_ref(&range))?
        .pop()
        .expect("one range read");
    if version_of(&bytes) != version {
        return Err(Error::Corrupt {
            what: slot.key,
            message: format!(
                "bytes {}..{} are not version {version} of {device}/{tag}",
                slot.offset,
                slot.offset + slot.len
            ),
        });
    }
    Ok(bytes.to_vec())
}

/// A model version's own file (a version imported alone, or stored before packs held the only
/// copy), in this layout or the one before it.
pub fn own_file(store: &Store, device: &str, tag: &str, version: &str) -> Result<Vec<u8>> {
    match store.get(&layout::model_file(device, tag, version)) {
        Err(fleetscore_store::Error::NotFound(_)) => Ok(store
            .get(&layout::legacy_model_file(device, tag, version))
            .map_err(|e| match e {
                // The name of this layout, not the old one's.
                fleetscore_store::Error::NotFound(_) => {
                    fleetscore_store::Error::NotFound(layout::model_file(device, tag, version))
                }
                e => e,
            })?
            .to_vec()),
        got => Ok(got?.to_vec()),
    }
}

/// Expands a file-name pattern such as `model_{device}_{tag}` against a file name: returns
/// (device, tag) when the name matches.
pub fn match_pattern(pattern: &str, name: &str) -> Option<(String, String)> {
    // Literal parts between the placeholders, in order.
    let mut fields = Vec::new();
    let mut literals = Vec::new();
    let mut rest = pattern;
    loop {
        let next = ["{device}", "{tag}"]
            .iter()
            .filter_map(|p| rest.find(p).map(|i| (i, *p)))
            .min();
        match next {
            Some((i, p)) => {
                literals.push(&rest[..i]);
                fields.push(p);
                rest = &rest[i + p.len()..];
            }
            None => {
                literals.push(rest);
                break;
            }
        }
    }
    let mut s = name.strip_prefix(literals[0])?;
    let (mut device, mut tag) = (None, None);
    for (k, field) in fields.iter().enumerate() {
        let lit = literals[k + 1];
        // A field ends at the next literal (or the end); empty literals split nowhere.
        let end = if lit.is_empty() {
            if k + 1 == fields.len() {
                s.len()
            } else {
                return None;
            }
        } else if k + 1 == fields.len() {
            s.strip_suffix(lit).map(str::len)?
        } else {
            s.find(lit)?
        };
        let value = &s[..end];
        if value.is_empty() {
            return None;
        }
        match *field {
            "{device}" => device = Some(value.to_string()),
            _ => tag = Some(value.to_string()),
        }
        s = &s[end + lit.len()..];
    }
    if !s.is_empty() {
        return None;
    }
    Some((device?, tag?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_the_reference_names() {
        assert_eq!(
            match_pattern("model_{device}_{tag}", "model_1_5"),
            Some(("1".into(), "5".into()))
        );
        assert_eq!(
            match_pattern("{tag}-{device}.joblib", "temp-dev7.joblib"),
            Some(("dev7".into(), "temp".into()))
        );
        assert_eq!(match_pattern("model_{device}_{tag}", "other_1_5"), None);
        assert_eq!(match_pattern("model_{device}_{tag}.pkl", "model_1_5"), None);
    }
}
