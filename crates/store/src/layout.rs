//! Where everything lives in a store. Every key is derived from what it holds, so a retried
//! write lands on the same key and replaces, never duplicates.
//!
//! ```text
//! models/{device}/{tag}@{version}.json             a version's metadata (estimator, features,
//!                                                  ..., and where in a pack its file is), once
//!                                                  a catalog no longer holds it as current
//! models/{device}/{tag}@{version}.model            the imported file, byte for byte, when no
//!                                                  pack holds it (a version imported alone)
//! models/catalog/bucket={BB}/{generation}.json      the current version of every model of
//!                                                  the bucket's devices (the newest
//!                                                  generation counts; see below)
//! models/catalog/snapshot={fingerprint}.json        every bucket's catalog in one object, for
//!                                                  the generations the fingerprint names
//! models/packs/v={hash}.pack                       the files of one import's new versions,
//!                                                  end to end, sorted by bucket: their only
//!                                                  copy, kept; a run reads a task's models
//!                                                  with one ranged GET
//! models/packs/p={hash}.pack                       (stores written before packs held the only
//!                                                  copy) an import's files, each also in
//!                                                  `models/{device}/{tag}/versions/`
//! models/packs/state=unreferenced.json             such packs no catalog refers to, and since
//!                                                  when
//! readings/hour={YYYY-MM-DDTHH}/bucket={BB}/{hash}.parquet
//!                                                  readings (ts, device, tag, value) of one
//!                                                  hour and device bucket, one file per import
//! features/hour={YYYY-MM-DDTHH}/bucket={BB}/{aggregator}~p{PPPP}-{from}-{to}-e{epoch}.parquet
//!                                                  closed windows (device, tag, window_start,
//!                                                  window_end, count, mean, min, max, std,
//!                                                  first, last) starting in that hour, of the
//!                                                  bucket's devices, closed by one aggregation
//!                                                  epoch of an aggregator from a log
//!                                                  partition's offsets [from, to)
//! features/hour={…}/bucket={BB}/{aggregator}~compacted-{hash}.parquet
//!                                                  the merge of an aggregator's files of an
//!                                                  hour once every partition has closed its
//!                                                  windows
//! late/{name}/p{PPPP}-{from}-{to}-e{epoch}.parquet readings that came after their window closed
//! aggregate/{name}/checkpoint                      the aggregator's offsets and open windows
//! aggregate/{name}/intent.json                     the epoch it is writing
//! predictions/run={run}/shard-{NNNNN}.parquet      one shard task's predictions
//! logs/run={run}/shard-{NNNNN}.attempt-{K}.log     each attempt's log and timings
//! summaries/run={run}/shard-{NNNNN}.json           one shard task's per-model counts
//!                                                  (rows, anomalies, no data, failures)
//! runs/{run}.json                                  the run record
//! ```
//!
//! Devices are spread over [`BUCKETS`] buckets by a stable hash, so that a shard task reads only
//! the readings of its own devices.
//!
//! Which version of each model is current lives in one catalog per device bucket, so planning a
//! run reads 64 objects however many models there are. A current version's catalog entry is its
//! metadata; the commit that replaces it writes it under its own key first. A catalog is never
//! rewritten: an import writes generation n+1 only if no one else has (a conditional put), and
//! on losing that race reads the winner's generation and applies its changes again.

/// Number of device buckets readings are partitioned into.
pub const BUCKETS: u32 = 64;

/// A stable bucket for a device (FNV-1a, the same on every machine and version).
pub fn bucket(device: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(BUCKETS)) as u32
}

/// Escapes a device or tag for use as one key segment: bytes outside `[A-Za-z0-9._-]` become
/// `%XX`, so any id is safe and two ids never share a key.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_')
            || (b == b'.' && !s.starts_with('.'))
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

/// Reverses [`segment`].
pub fn unsegment(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            let b = u8::from_str_radix(hex, 16).ok()?;
            if !(hex == "00" && s == "%00") {
                out.push(b);
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Prefix of every model.
pub const MODELS: &str = "models";

/// The folder of one device's models: the metadata of its versions no catalog holds as current
/// any more, and the files of versions imported alone. No model has a folder of its own (on a
/// local store a folder is one more inode, and creating inodes was most of what importing
/// thousands of models cost).
pub fn device_models(device: &str) -> String {
    format!("{MODELS}/{}", segment(device))
}

/// What a model version's objects are named by: `{tag}@{version}` (a tag's segment never holds
/// `@`, which [`segment`] escapes).
fn model_version(device: &str, tag: &str, version: &str) -> String {
    format!("{}/{}@{version}", device_models(device), segment(tag))
}

/// A model version's metadata, and where its bytes are (written when a catalog stops holding
/// the version as current).
pub fn model_meta(device: &str, tag: &str, version: &str) -> String {
    format!("{}.json", model_version(device, tag, version))
}

/// A model version's file when no pack holds it.
pub fn model_file(device: &str, tag: &str, version: &str) -> String {
    format!("{}.model", model_version(device, tag, version))
}

/// Parses a key among a device's models (see [`device_models`]) into (tag, version) if it is a
/// version's metadata, of this layout or of the one before it
/// (`{tag}/versions/{version}.json`).
pub fn parse_model_meta_key(device: &str, key: &str) -> Option<(String, String)> {
    let rest = key
        .strip_prefix(&device_models(device))?
        .strip_prefix('/')?;
    let name = rest.strip_suffix(".json")?;
    let (tag, version) = match name.split_once('/') {
        None => name.rsplit_once('@')?,
        Some((tag, v)) => (tag, v.strip_prefix("versions/")?),
    };
    if version.is_empty() || version.contains(['/', '@']) || tag.contains('@') {
        return None;
    }
    Some((unsegment(tag)?, version.to_string()))
}

/// A model version's file in the layout before this one, which stored every version's file
/// and metadata under `models/{device}/{tag}/versions/` (read, never written).
pub fn legacy_model_file(device: &str, tag: &str, version: &str) -> String {
    format!(
        "{}/{}/versions/{version}.model",
        device_models(device),
        segment(tag)
    )
}

/// A model version's metadata in the layout before this one (read, never written).
pub fn legacy_model_meta(device: &str, tag: &str, version: &str) -> String {
    format!(
        "{}/{}/versions/{version}.json",
        device_models(device),
        segment(tag)
    )
}

/// Prefix of the registry's catalogs. (No model folder can be mistaken for one: a catalog's
/// second segment, `bucket=BB`, holds a `=`, which [`segment`] escapes in every tag.)
pub const CATALOGS: &str = "models/catalog";

/// Folder of one device bucket's catalog generations.
pub fn catalog_dir(bucket: u32) -> String {
    format!("{CATALOGS}/bucket={bucket:02}")
}

/// One generation of a device bucket's catalog.
pub fn catalog(bucket: u32, generation: u64) -> String {
    format!("{}/{generation:012}.json", catalog_dir(bucket))
}

/// Parses a [`catalog`] key back into (bucket, generation).
pub fn parse_catalog_key(key: &str) -> Option<(u32, u64)> {
    let rest = key.strip_prefix(CATALOGS)?.strip_prefix("/bucket=")?;
    let (b, file) = rest.split_once('/')?;
    let generation = file.strip_suffix(".json")?;
    if b.len() != 2 || generation.len() != 12 {
        return None;
    }
    Some((b.parse().ok()?, generation.parse().ok()?))
}

/// A snapshot of every bucket's catalog, for the set of generations `fingerprint` names.
pub fn catalog_snapshot(fingerprint: &str) -> String {
    format!("{CATALOGS}/snapshot={fingerprint}.json")
}

/// Parses a [`catalog_snapshot`] key back into its fingerprint.
pub fn parse_catalog_snapshot_key(key: &str) -> Option<&str> {
    key.strip_prefix(CATALOGS)?
        .strip_prefix("/snapshot=")?
        .strip_suffix(".json")
}

/// Prefix of the model packs. (A name directly under a device's folder never holds the `=`
/// that every name under this one has.)
pub const PACKS: &str = "models/packs";

/// A model pack, named by the hash of its content: the only copy of its versions' files, kept
/// as long as they are.
pub fn pack(hash: &str) -> String {
    format!("{PACKS}/v={hash}.pack")
}

/// Whether `key` is a [`pack`].
pub fn is_pack_key(key: &str) -> bool {
    pack_hash(key, "/v=").is_some()
}

/// Whether `key` is a pack written before packs held the only copy of their files (each file
/// is also stored on its own): such packs are collected once no catalog refers to them.
pub fn is_copy_pack_key(key: &str) -> bool {
    pack_hash(key, "/p=").is_some()
}

fn pack_hash<'k>(key: &'k str, kind: &str) -> Option<&'k str> {
    key.strip_prefix(PACKS)
        .and_then(|r| r.strip_prefix(kind))
        .and_then(|r| r.strip_suffix(".pack"))
        .filter(|h| !h.is_empty() && !h.contains('/'))
}

/// The copy packs (see [`is_copy_pack_key`]) no catalog refers to, and since when (collected
/// after a retention period).
pub const PACKS_UNREFERENCED: &str = "models/packs/state=unreferenced.json";

/// Milliseconds in an hour: readings and features are kept by the hour.
pub const HOUR_MS: i64 = 3_600_000;

/// The hour key (`YYYY-MM-DDTHH`, UTC) of an epoch-millisecond time, as the `hour=` folders of
/// readings and features name it.
pub fn hour_key(ms: i64) -> String {
    let hour = ms.div_euclid(HOUR_MS) * HOUR_MS;
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(hour)
        .map(|t| t.format("%Y-%m-%dT%H").to_string())
        .unwrap_or_else(|| "out-of-range".into())
}

/// Prefix of all readings.
pub const READINGS: &str = "readings";

/// Folder of one hour's readings (`hour` as `YYYY-MM-DDTHH`).
pub fn readings_hour(hour: &str) -> String {
    format!("{READINGS}/hour={hour}")
}

/// Folder of one hour's readings of one device bucket.
pub fn readings_dir(hour: &str, bucket: u32) -> String {
    format!("{}/bucket={bucket:02}", readings_hour(hour))
}

/// Parses `readings/hour=H/bucket=B/...` into (hour, bucket).
pub fn parse_readings_key(key: &str) -> Option<(String, u32)> {
    let mut parts = key.split('/');
    if parts.next()? != READINGS {
        return None;
    }
    let hour = parts.next()?.strip_prefix("hour=")?.to_string();
    let bucket = parts.next()?.strip_prefix("bucket=")?.parse().ok()?;
    Some((hour, bucket))
}

/// Prefix of all features (closed windows).
pub const FEATURES: &str = "features";

/// Folder of the windows that start in one hour.
pub fn features_hour(hour: &str) -> String {
    format!("{FEATURES}/hour={hour}")
}

/// Folder of the windows that start in one hour, of one device bucket.
pub fn features_dir(hour: &str, bucket: u32) -> String {
    format!("{}/bucket={bucket:02}", features_hour(hour))
}

/// The name of what the aggregator `aggregator` wrote in an epoch from a partition's offsets
/// `[from, to)`. Names start with the aggregator's ([`aggregator_prefix`]): several aggregators
/// (one per ingest machine, each with its own log) feed one store without their files ever
/// colliding, and each compacts only its own.
pub fn epoch_file(aggregator: &str, partition: u32, from: u64, to: u64, epoch: u64) -> String {
    format!(
        "{}p{partition:04}-{from:020}-{to:020}-e{epoch:010}.parquet",
        aggregator_prefix(aggregator)
    )
}

/// The start of every features file name an aggregator writes: its name as a key segment and
/// `~` (which [`segment`] always escapes, so no name is another's prefix).
pub fn aggregator_prefix(aggregator: &str) -> String {
    format!("{}~", segment(aggregator))
}

/// Whether a features file (its name) is the aggregator's: its prefix, or, for the aggregator
/// named `default`, a file named before names carried the aggregator.
pub fn is_aggregators_file(aggregator: &str, name: &str) -> bool {
    name.starts_with(&aggregator_prefix(aggregator))
        || (aggregator == "default" && !name.contains('~'))
}

/// The aggregator's merge of features files (FNV-1a of their sorted names), so compacting the
/// same files again writes the same name.
pub fn compacted_file(aggregator: &str, inputs: &[String]) -> String {
    let mut names: Vec<&String> = inputs.iter().collect();
    names.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for n in names {
        for &b in n.as_bytes().iter().chain(b"\n") {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!(
        "{}compacted-{h:016x}.parquet",
        aggregator_prefix(aggregator)
    )
}

/// `file` (a `.parquet` name) with the event-time range of its rows, `[min_ts, max_ts]` in
/// epoch ms, in its name: readers of a window skip the files of its hour that cannot hold any
/// of its rows without fetching them ([`file_time_range`]).
pub fn with_time_range(file: &str, min_ts: i64, max_ts: i64) -> String {
    let stem = file.strip_suffix(".parquet").unwrap_or(file);
    format!("{stem}-t{min_ts}_{max_ts}.parquet")
}

/// The `[min, max]` event-time range a file name carries ([`with_time_range`]); `None` for
/// names without one (such a file may hold any time of its hour).
pub fn file_time_range(name: &str) -> Option<(i64, i64)> {
    let stem = name.strip_suffix(".parquet")?;
    let (_, range) = stem.rsplit_once("-t")?;
    let (min, max) = range.split_once('_')?;
    Some((min.parse().ok()?, max.parse().ok()?))
}

/// Parses `features/hour=H/bucket=B/...` into (hour, bucket).
pub fn parse_features_key(key: &str) -> Option<(String, u32)> {
    let mut parts = key.split('/');
    if parts.next()? != FEATURES {
        return None;
    }
    let hour = parts.next()?.strip_prefix("hour=")?.to_string();
    let bucket = parts.next()?.strip_prefix("bucket=")?.parse().ok()?;
    Some((hour, bucket))
}

/// Folder of an aggregator's late readings.
pub fn late_dir(name: &str) -> String {
    format!("late/{}", segment(name))
}

/// An aggregator's checkpoint (offsets and open windows).
pub fn aggregate_checkpoint(name: &str) -> String {
    format!("aggregate/{}/checkpoint", segment(name))
}

/// The epoch an aggregator is writing (replayed after a crash).
pub fn aggregate_intent(name: &str) -> String {
    format!("aggregate/{}/intent.json", segment(name))
}

/// One shard's predictions.
pub fn predictions(run: &str, shard: u32) -> String {
    format!("predictions/run={run}/shard-{shard:05}.parquet")
}

/// Prefix of one run's predictions.
pub fn predictions_dir(run: &str) -> String {
    format!("predictions/run={run}")
}

/// The log of one attempt at a shard (every attempt's log is kept).
pub fn task_log(run: &str, shard: u32, attempt: u32) -> String {
    format!("logs/run={run}/shard-{shard:05}.attempt-{attempt}.log")
}

/// Folder of a run's task logs.
pub fn logs_dir(run: &str) -> String {
    format!("logs/run={run}")
}

/// One shard task's per-model summary: what each of its models did, for the monitor's model
/// health (one small object per task, so nobody reads predictions to count anomalies).
pub fn task_summary(run: &str, shard: u32) -> String {
    format!("summaries/run={run}/shard-{shard:05}.json")
}

/// Folder of a run's task summaries.
pub fn summaries_dir(run: &str) -> String {
    format!("summaries/run={run}")
}

/// The longest run id, in bytes.
pub const MAX_RUN_ID_BYTES: usize = 128;

/// Checks a run id: 1 to [`MAX_RUN_ID_BYTES`] bytes of `A-Z a-z 0-9 . _ -`, not starting with
/// a dot. A run's keys are named by its id as one path segment (`predictions/run={id}/...`), so
/// an id with a `/` would put one run's outputs inside another's, and re-planning that run
/// would delete them.
pub fn check_run_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_RUN_ID_BYTES {
        return Err(format!(
            "run id {:?} is {} bytes long (1 to {MAX_RUN_ID_BYTES})",
            id.chars().take(MAX_RUN_ID_BYTES).collect::<String>(),
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "run id {id:?} has {c:?}: use letters, digits, `.`, `_` and `-`"
        ));
    }
    if id.starts_with('.') {
        return Err(format!("run id {id:?} starts with a dot"));
    }
    Ok(())
}

/// A run's record.
pub fn run_record(run: &str) -> String {
    format!("runs/{run}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_files_time_range_survives_its_name() {
        let file = epoch_file("edge-1", 3, 10, 20, 7);
        for (min, max) in [(0, 0), (1_795_983_913_718, 1_795_983_973_000), (-5_000, -1)] {
            let named = with_time_range(&file, min, max);
            assert!(named.ends_with(".parquet"), "{named}");
            assert!(is_aggregators_file("edge-1", &named), "{named}");
            assert_eq!(file_time_range(&named), Some((min, max)), "{named}");
        }
        // Names without a range: an epoch's features, an imported file.
        assert_eq!(file_time_range(&file), None);
        assert_eq!(file_time_range("a3f9e1c2b4d5e6f7.parquet"), None);
    }

    #[test]
    fn run_ids_are_one_safe_segment() {
        for ok in [
            "20180828T000000Z_20180830T000000Z",
            "reference",
            "a.b-c_d",
            "x",
        ] {
            assert_eq!(check_run_id(ok), Ok(()), "{ok}");
        }
        for bad in ["", "p/q", "..", ".hidden", "a b", "é", "a\\b", "a%2Fb"] {
            assert!(check_run_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_run_id(&"r".repeat(MAX_RUN_ID_BYTES)).is_ok());
        let long = check_run_id(&"r".repeat(MAX_RUN_ID_BYTES + 1)).unwrap_err();
        assert!(long.contains("129 bytes long"), "{long}");
    }

    #[test]
    fn segments_round_trip_and_are_safe() {
        for s in [
            "1",
            "dev-7_a.b",
            "a/b",
            "x y",
            "%",
            "..",
            ".hidden",
            "",
            "é",
        ] {
            let seg = segment(s);
            assert!(
                !seg.contains('/') && seg != "." && seg != "..",
                "{s:?} -> {seg}"
            );
            assert_eq!(unsegment(&seg).as_deref(), Some(s), "{seg}");
        }
        assert_eq!(
            model_file("dev 1", "t/2", "abc"),
            "models/dev%201/t%2F2@abc.model"
        );
        assert_eq!(
            model_meta("dev 1", "t@2", "abc"),
            "models/dev%201/t%402@abc.json"
        );
    }

    #[test]
    fn version_metadata_keys_parse_back_in_both_layouts() {
        for (device, tag) in [("d", "t"), ("dev 1", "a@b/c"), ("catalog", "x.y")] {
            for key in [
                model_meta(device, tag, "0123abcd"),
                legacy_model_meta(device, tag, "0123abcd"),
            ] {
                assert_eq!(
                    parse_model_meta_key(device, &key),
                    Some((tag.to_string(), "0123abcd".to_string())),
                    "{key}"
                );
            }
            for other in [
                model_file(device, tag, "0123abcd"),
                legacy_model_file(device, tag, "0123abcd"),
                format!("{}/bucket=07/000000000001.json", device_models(device)),
                model_meta(&format!("{device}x"), tag, "0123abcd"),
            ] {
                assert_eq!(parse_model_meta_key(device, &other), None, "{other}");
            }
        }
        assert!(is_pack_key(&pack("ab12")) && !is_copy_pack_key(&pack("ab12")));
        assert!(is_copy_pack_key("models/packs/p=ab12.pack"));
        assert!(!is_pack_key("models/packs/state=unreferenced.json"));
    }

    #[test]
    fn buckets_are_stable() {
        // Fixed values (FNV-1a 64 mod 64): a change here would move every stored reading.
        assert_eq!(
            [bucket("1"), bucket("2"), bucket("3"), bucket("device-42")],
            [60, 21, 34, 40]
        );
        assert_eq!(
            parse_readings_key("readings/hour=2018-08-28T23/bucket=07/abc.parquet"),
            Some(("2018-08-28T23".into(), 7))
        );
    }

    #[test]
    fn catalog_keys_round_trip() {
        assert_eq!(catalog(7, 42), "models/catalog/bucket=07/000000000042.json");
        assert_eq!(parse_catalog_key(&catalog(63, 1)), Some((63, 1)));
        assert_eq!(parse_catalog_key("models/catalog/bucket=07/x.json"), None);
        // A model whose device is `catalog` lives elsewhere: its tag cannot hold `=`.
        assert!(!model_file("catalog", "bucket=07", "v").starts_with(&catalog_dir(7)));
        assert!(!model_meta("catalog", "bucket=07", "v").starts_with(&catalog_dir(7)));
    }
}
