//! The model registry: scikit-learn files validated with the safe loader and stored under their
//! (device, tag) with a content-hash version. Re-importing the same bytes changes nothing; new
//! bytes become a new current version and old versions stay.

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

/// Validates `bytes` as a model and stores it as the current version for (device, tag).
/// `features` names the reading columns that feed it (default: the raw `value`, for a model of
/// one feature).
pub fn import(
    store: &Store,
    device: &str,
    tag: &str,
    bytes: &[u8],
    source: &str,
    features: Option<&[String]>,
) -> Result<(ModelMeta, Imported)> {
    let model = Model::from_bytes(bytes)?;
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
    let version = version_of(bytes);
    if let Some(current) = current(store, device, tag)?
        && current.version == version
        && current.features == features
    {
        return Ok((current, Imported::Unchanged));
    }
    let meta_key = layout::model_meta(device, tag, &version);
    let (meta, outcome) = match store.get_opt(&meta_key)? {
        Some(existing) => {
            let mut meta = parse_meta(&meta_key, &existing)?;
            if meta.features != features {
                meta.features = features;
                store.put(
                    &meta_key,
                    serde_json::to_vec_pretty(&meta).expect("serializable"),
                )?;
            }
            (meta, Imported::Restored)
        }
        None => {
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
            };
            // The file first, then its metadata, then the pointer: a reader that sees a pointer
            // always finds what it points to.
            store.put(&layout::model_file(device, tag, &version), bytes.to_vec())?;
            store.put(
                &meta_key,
                serde_json::to_vec_pretty(&meta).expect("serializable"),
            )?;
            (meta, Imported::New)
        }
    };
    store.put(
        &layout::model_current(device, tag),
        serde_json::to_vec_pretty(&meta).expect("serializable"),
    )?;
    Ok((meta, outcome))
}

/// The current version of (device, tag), if any.
pub fn current(store: &Store, device: &str, tag: &str) -> Result<Option<ModelMeta>> {
    let key = layout::model_current(device, tag);
    store
        .get_opt(&key)?
        .map(|b| parse_meta(&key, &b))
        .transpose()
}

/// Every (device, tag)'s current version, sorted by device then tag.
pub fn list(store: &Store) -> Result<Vec<ModelMeta>> {
    let keys: Vec<String> = store
        .list(layout::MODELS)?
        .into_iter()
        .filter(|e| layout::parse_model_current(&e.key).is_some())
        .map(|e| e.key)
        .collect();
    let mut out = Vec::with_capacity(keys.len());
    for (key, bytes) in keys.iter().zip(store.get_many(&keys)?) {
        out.push(parse_meta(key, &bytes)?);
    }
    out.sort_by(|a, b| (&a.device, &a.tag).cmp(&(&b.device, &b.tag)));
    Ok(out)
}

/// Every stored version of (device, tag), oldest import first.
pub fn versions(store: &Store, device: &str, tag: &str) -> Result<Vec<ModelMeta>> {
    let dir = format!("{}/versions", layout::model_dir(device, tag));
    let mut out = Vec::new();
    for entry in store.list(&dir)? {
        if entry.key.ends_with(".json") {
            out.push(parse_meta(&entry.key, &store.get(&entry.key)?)?);
        }
    }
    out.sort_by(|a, b| a.imported_at.cmp(&b.imported_at));
    Ok(out)
}

/// The bytes of a model version.
pub fn model_bytes(store: &Store, device: &str, tag: &str, version: &str) -> Result<Vec<u8>> {
    Ok(store
        .get(&layout::model_file(device, tag, version))?
        .to_vec())
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
