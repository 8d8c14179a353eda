//! What `models inspect` shows: format, estimator tree, features, version and parameters.

use std::collections::BTreeMap;

use fleetscore_pickle::{Node, Value};
use serde::Serialize;

use crate::reader::Obj;

/// A description of a loaded model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// How the file was stored, e.g. `pickle, protocol 3` or `joblib (zlib), protocol 4`.
    pub format: String,
    /// The estimator in one line, e.g. `Pipeline(StandardScaler, OneClassSVM)`.
    pub estimator: String,
    /// Features per input row.
    pub n_features: usize,
    /// Feature names, when the model was fitted on a DataFrame.
    pub feature_names: Option<Vec<String>>,
    /// scikit-learn version that saved the model (`_sklearn_version`).
    pub sklearn_version: Option<String>,
    /// The steps, in order; a bare estimator is one step.
    pub steps: Vec<StepInfo>,
}

/// One estimator of a model.
#[derive(Debug, Clone, Serialize)]
pub struct StepInfo {
    /// Step name in the pipeline (the class name for a bare estimator).
    pub name: String,
    /// Fully qualified class, e.g. `sklearn.svm._classes.OneClassSVM`.
    pub class: String,
    /// Constructor parameters (scalar ones) as stored in the file.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Facts about the fitted state (support vectors, trees, ...).
    pub fitted: BTreeMap<String, serde_json::Value>,
}

impl StepInfo {
    /// The info of an estimator object: its class and scalar constructor parameters.
    pub(crate) fn of(obj: &Obj<'_>) -> StepInfo {
        let mut params = BTreeMap::new();
        for (key, value) in obj.pk.attrs(obj.value) {
            if key.starts_with('_') || key.ends_with('_') {
                continue;
            }
            if let Some(json) = scalar_json(obj, value, 1) {
                params.insert(key, json);
            }
        }
        StepInfo {
            name: obj.class.to_string(),
            class: obj.qualified_class(),
            params,
            fitted: BTreeMap::new(),
        }
    }

    /// Adds a fact about the fitted state.
    pub(crate) fn fitted(mut self, key: &str, value: impl Into<serde_json::Value>) -> StepInfo {
        self.fitted.insert(key.to_string(), value.into());
        self
    }
}

/// Scalars, strings and short tuples of them; `None` for anything else (arrays, estimators).
fn scalar_json(obj: &Obj<'_>, value: Value, depth: u8) -> Option<serde_json::Value> {
    Some(match value {
        Value::None => serde_json::Value::Null,
        Value::Bool(b) => b.into(),
        Value::Int(i) => i.into(),
        Value::Float(f) => serde_json::Number::from_f64(f)
            .map(serde_json::Value::Number)
            .unwrap_or_else(|| f.to_string().into()),
        Value::Ref(_) => match obj.node(value)? {
            Node::Str(s) => s.clone().into(),
            Node::Tuple(items) | Node::List(items) if depth > 0 && items.len() <= 8 => items
                .iter()
                .map(|v| scalar_json(obj, *v, depth - 1))
                .collect::<Option<Vec<_>>>()?
                .into(),
            _ => return None,
        },
    })
}
