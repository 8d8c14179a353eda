//! scikit-learn anomaly models, loaded from pickle, joblib and skops files without Python and
//! without executing anything from the file, and scored natively with scikit-learn's numbers.
//!
//! ```no_run
//! let bytes = std::fs::read("model.pkl").unwrap();
//! let model = fleetscore_models::Model::from_bytes(&bytes).unwrap();
//! let rows = [0.5, 1.5, 2.5]; // three rows of one feature, row-major
//! let mut decision = [0.0; 3];
//! let mut predicted = [0i8; 3];
//! model.score(&rows, &mut decision, &mut predicted).unwrap();
//! ```
#![warn(missing_docs)]

mod classes;
mod detector;
mod error;
mod estimators;
mod fastexp;
mod info;
mod reader;

pub use fleetscore_pickle::Limits;
use fleetscore_pickle::{Budget, Value};

pub use detector::{Detector, TieRule, Transform};
pub use error::{Error, Result};
pub use info::{ModelInfo, StepInfo};

use classes::Built;
use reader::Obj;

/// Rows scored per pass through the pipeline: bounds the scratch buffer and keeps it in cache.
const CHUNK_ROWS: usize = 2048;
/// Pipelines nested deeper than this are refused.
const MAX_PIPELINE_DEPTH: usize = 8;

/// A loaded model: transformers (scalers) followed by an anomaly detector.
#[derive(Debug)]
pub struct Model {
    transforms: Vec<Box<dyn Transform>>,
    detector: Box<dyn Detector>,
    info: ModelInfo,
}

impl Model {
    /// Loads a model from the bytes of a pickle or joblib file (any compression joblib writes)
    /// or a skops file, within the default [`Limits`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        Model::from_bytes_within(bytes, &Limits::default())
    }

    /// Loads a model within `limits`: one memory budget of [`Limits::max_memory_bytes`] covers
    /// the file's decompression and unpickling and every array the estimators copy out of it
    /// (an array shared by a thousand trees is copied, and charged, a thousand times).
    pub fn from_bytes_within(bytes: &[u8], limits: &Limits) -> Result<Model> {
        Model::from_bytes_measured(bytes, limits).map(|(model, _)| model)
    }

    /// Like [`Model::from_bytes_within`], also returning the bytes the load charged to its
    /// budget: what to size [`Limits::max_memory_bytes`] by (`models bench` prints it).
    pub fn from_bytes_measured(bytes: &[u8], limits: &Limits) -> Result<(Model, usize)> {
        let budget = Budget::new(limits.max_memory_bytes);
        let loaded = fleetscore_pickle::load_within(bytes, classes::allow_list(), limits, &budget)?;
        let pk = &loaded.pickle;
        let root = Obj::new(pk, pk.root(), &budget)?;
        let mut transforms = Vec::new();
        let mut detector = None;
        let mut steps = Vec::new();
        // A Pipeline's feature names are its first step's.
        let mut feature_names = None;
        collect_steps(&root, root.class, 0, &mut |name, obj| {
            if steps.is_empty() {
                feature_names = obj.feature_names();
            }
            if detector.is_some() {
                return Err(Error::Unsupported(format!(
                    "step `{name}` ({}) comes after the anomaly detector; only the last step may score",
                    obj.class
                )));
            }
            let mut info = match classes::build(obj)? {
                Built::Transform(t) => {
                    let info = t.info();
                    transforms.push(t);
                    info
                }
                Built::Detector(d) => {
                    let info = d.info();
                    detector = Some(d);
                    info
                }
            };
            info.name = name.to_string();
            steps.push(info);
            Ok(())
        })?;
        let detector = detector.ok_or_else(|| {
            Error::Unsupported(format!(
                "{} has no anomaly detector as its last step (it only transforms)",
                root.class
            ))
        })?;
        let n_features = transforms
            .first()
            .map(|t| t.n_features())
            .unwrap_or_else(|| detector.n_features());
        // Each step must produce what the next one takes.
        let widths: Vec<(String, usize)> = steps
            .iter()
            .map(|s| s.name.clone())
            .zip(
                transforms
                    .iter()
                    .map(|t| t.n_features())
                    .chain([detector.n_features()]),
            )
            .collect();
        for pair in widths.windows(2) {
            if pair[0].1 != pair[1].1 {
                return Err(Error::Unsupported(format!(
                    "step `{}` works on {} features but step `{}` expects {}",
                    pair[0].0, pair[0].1, pair[1].0, pair[1].1
                )));
            }
        }
        let sklearn_version = pk
            .attr(root.value, "_sklearn_version")
            .and_then(|v| pk.as_str(v).map(str::to_string))
            .or_else(|| {
                // A Pipeline's version is its steps'; take the first step that has one.
                steps_versions(&root)
            });
        let estimator = if steps.len() == 1 && root.class != "Pipeline" {
            root.class.to_string()
        } else {
            let names: Vec<&str> = steps
                .iter()
                .map(|s| s.class.rsplit('.').next().unwrap_or(&s.class))
                .collect();
            format!("Pipeline({})", names.join(", "))
        };
        let info = ModelInfo {
            format: loaded.format(),
            estimator,
            n_features,
            feature_names,
            sklearn_version,
            steps,
        };
        let model = Model {
            transforms,
            detector,
            info,
        };
        Ok((model, budget.used()))
    }

    /// Bytes the loaded model holds on the heap (its parameters: support vectors, trees,
    /// scalers' vectors), for caches of loaded models to be bounded by.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Model>()
            + self.detector.heap_bytes()
            + self
                .transforms
                .iter()
                .map(|t| t.heap_bytes())
                .sum::<usize>()
            + self.info.feature_names.as_ref().map_or(0, |n| {
                n.iter()
                    .map(|s| s.len() + std::mem::size_of::<String>())
                    .sum()
            })
    }

    /// Features per input row.
    pub fn n_features(&self) -> usize {
        self.info.n_features
    }

    /// What the model is: format, estimators, features, version, parameters.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// scikit-learn's `decision_function` for each row of `x` (row-major, `n_features` columns).
    pub fn decision_function(&self, x: &[f64], out: &mut [f64]) -> Result<()> {
        self.run(x, out, |d, rows, o| d.decision_function(rows, o))
    }

    /// scikit-learn's `score_samples` for each row of `x`.
    pub fn score_samples(&self, x: &[f64], out: &mut [f64]) -> Result<()> {
        self.run(x, out, |d, rows, o| d.score_samples(rows, o))
    }

    /// scikit-learn's `predict`: +1 for inliers, -1 for outliers.
    pub fn predict(&self, x: &[f64], out: &mut [i8]) -> Result<()> {
        let mut decision = vec![0.0; out.len()];
        self.score(x, &mut decision, out)
    }

    /// `decision_function` and `predict` in one pass.
    pub fn score(&self, x: &[f64], decision: &mut [f64], predicted: &mut [i8]) -> Result<()> {
        self.decision_function(x, decision)?;
        let rule = self.detector.tie_rule();
        for (p, d) in predicted.iter_mut().zip(decision.iter()) {
            *p = if rule.is_inlier(*d) { 1 } else { -1 };
        }
        Ok(())
    }

    /// [`Model::score`] split over `threads` threads (rows are independent).
    pub fn score_parallel(
        &self,
        x: &[f64],
        decision: &mut [f64],
        predicted: &mut [i8],
        threads: usize,
    ) -> Result<()> {
        let d = self.n_features();
        let rows = decision.len();
        let threads = threads.clamp(1, rows.div_ceil(CHUNK_ROWS).max(1));
        if threads == 1 {
            return self.score(x, decision, predicted);
        }
        self.check(x, rows)?;
        // Rows are handed out in pieces as threads come for them, so a thread that shares its
        // core with other work (a file's reader or writer) scores fewer pieces instead of
        // holding the others up; the calling thread scores too.
        let piece = rows.div_ceil(threads * 4).max(CHUNK_ROWS);
        let pieces = std::sync::Mutex::new(
            x.chunks(piece * d)
                .zip(decision.chunks_mut(piece))
                .zip(predicted.chunks_mut(piece)),
        );
        let work = || -> Result<()> {
            loop {
                let next = pieces.lock().expect("no thread panics holding it").next();
                let Some(((xs, ds), ps)) = next else {
                    return Ok(());
                };
                self.score(xs, ds, ps)?;
            }
        };
        std::thread::scope(|s| {
            let helpers: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
            let mine = work();
            helpers
                .into_iter()
                .map(|h| h.join().expect("scoring thread panicked"))
                .fold(mine, Result::and)
        })
    }

    fn check(&self, x: &[f64], rows: usize) -> Result<()> {
        let d = self.n_features();
        if x.len() != rows * d {
            return Err(if x.len().is_multiple_of(d) {
                Error::Shape {
                    len: x.len(),
                    n_features: d,
                }
            } else {
                Error::FeatureCount {
                    expected: d,
                    found: x.len() / rows.max(1),
                }
            });
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                row: i / d,
                feature: i % d,
                value: x[i],
            });
        }
        Ok(())
    }

    fn run(
        &self,
        x: &[f64],
        out: &mut [f64],
        f: impl Fn(&dyn Detector, &[f64], &mut [f64]),
    ) -> Result<()> {
        self.check(x, out.len())?;
        let d = self.n_features();
        if self.transforms.is_empty() {
            f(self.detector.as_ref(), x, out);
            return Ok(());
        }
        let mut scratch = vec![0.0; CHUNK_ROWS.min(out.len()) * d];
        for (rows, o) in x.chunks(CHUNK_ROWS * d).zip(out.chunks_mut(CHUNK_ROWS)) {
            let buf = &mut scratch[..rows.len()];
            buf.copy_from_slice(rows);
            for t in &self.transforms {
                t.transform(buf);
            }
            f(self.detector.as_ref(), buf, o);
        }
        Ok(())
    }
}

/// Walks a Pipeline (nested ones too) or a bare estimator, calling `visit` on each step.
fn collect_steps<'a>(
    obj: &Obj<'a>,
    name: &str,
    depth: usize,
    visit: &mut dyn FnMut(&str, &Obj<'a>) -> Result<()>,
) -> Result<()> {
    if obj.class != "Pipeline" {
        return visit(name, obj);
    }
    if depth >= MAX_PIPELINE_DEPTH {
        return Err(Error::Unsupported(format!(
            "pipelines nested more than {MAX_PIPELINE_DEPTH} deep"
        )));
    }
    for step in obj.seq("steps")? {
        let (step_name, est) = match obj.pk.as_seq(*step) {
            Some([n, e]) => (obj.pk.as_str(*n).unwrap_or("?").to_string(), *e),
            _ => return Err(obj.bad("steps", "(name, estimator) pairs", *step)),
        };
        // `None` and 'passthrough' steps do nothing.
        if est == Value::None || obj.pk.as_str(est) == Some("passthrough") {
            continue;
        }
        let child = obj.child(est)?;
        collect_steps(&child, &step_name, depth + 1, visit)?;
    }
    Ok(())
}

fn steps_versions(root: &Obj<'_>) -> Option<String> {
    let steps = root.seq("steps").ok()?;
    steps.iter().find_map(|s| {
        let est = *root.pk.as_seq(*s)?.get(1)?;
        let v = root.pk.attr(est, "_sklearn_version")?;
        root.pk.as_str(v).map(str::to_string)
    })
}
