//! `fleetscore train`: fit new versions of the fleet's models on their sensors' history, as a
//! run of shard tasks (so `fleetscore worker` processes train too), with scikit-learn's numbers.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use fleetscore_jobs::registry;
use fleetscore_jobs::run::{self, RunOptions, RunRequest};
use fleetscore_jobs::train::{DEFAULT_MIN_ROWS, Estimator, Scaler, TrainTask};

use crate::fleet_cmd::StoreArgs;
use crate::fleet_cmd::{last_window, parse_time, plan_or_run, report_failures};

/// The estimators `train` fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EstimatorKind {
    /// scikit-learn's `OneClassSVM` (libsvm's one-class solver), behind `--scaler`.
    Ocsvm,
    /// scikit-learn's `IsolationForest`.
    Iforest,
}

/// The scaler in front of a one-class SVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScalerKind {
    /// `StandardScaler()`.
    Standard,
    /// `MinMaxScaler()`, to [0, 1].
    Minmax,
    /// No scaler.
    None,
}

/// `fleetscore train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training window start (inclusive): RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC) or epoch ms.
    #[arg(long, required_unless_present = "last", conflicts_with = "last")]
    pub from: Option<String>,
    /// Training window end (exclusive).
    #[arg(long, required_unless_present = "last", conflicts_with = "last")]
    pub to: Option<String>,
    /// Instead of --from and --to: the last whole window of this length before now (`7d`).
    #[arg(long, value_parser = fleetscore_core::parse_duration)]
    pub last: Option<Duration>,
    /// The estimator to fit; or `--like current`.
    #[arg(long, required_unless_present = "like", conflicts_with = "like")]
    pub estimator: Option<EstimatorKind>,
    /// `current`: fit each model as its current version was fitted — the same estimator and
    /// hyper-parameters, so a retrain keeps what the data scientist chose.
    #[arg(long, value_parser = ["current"])]
    pub like: Option<String>,
    /// The scaler in front of a one-class SVM.
    #[arg(long, value_enum, default_value_t = ScalerKind::Standard)]
    pub scaler: ScalerKind,
    /// OneClassSVM: ν, in (0, 1].
    #[arg(long, default_value_t = 0.5)]
    pub nu: f64,
    /// OneClassSVM: `scale`, `auto` or a number.
    #[arg(long, default_value = "scale")]
    pub gamma: String,
    /// OneClassSVM: `rbf`, `linear`, `poly` or `sigmoid`.
    #[arg(long, default_value = "rbf")]
    pub kernel: String,
    /// OneClassSVM: the polynomial kernel's degree.
    #[arg(long, default_value_t = 3)]
    pub degree: i32,
    /// OneClassSVM: the poly and sigmoid kernels' constant.
    #[arg(long, default_value_t = 0.0)]
    pub coef0: f64,
    /// OneClassSVM: the solver's tolerance.
    #[arg(long, default_value_t = 1e-3)]
    pub tol: f64,
    /// IsolationForest: trees.
    #[arg(long, default_value_t = 100)]
    pub n_estimators: usize,
    /// IsolationForest: `auto`, a row count, or a fraction of the rows (`0.5`).
    #[arg(long, default_value = "auto")]
    pub max_samples: String,
    /// IsolationForest: `auto` or the expected share of outliers (`0.01`).
    #[arg(long, default_value = "auto")]
    pub contamination: String,
    /// IsolationForest: a feature count or a fraction of the features (`1.0`).
    #[arg(long, default_value = "1.0")]
    pub max_features: String,
    /// IsolationForest: draw each tree's rows with replacement.
    #[arg(long)]
    pub bootstrap: bool,
    /// IsolationForest: the seed (numpy's `RandomState`: the same seed gives scikit-learn's
    /// trees). Default: one drawn for the run, kept in each model's metadata.
    #[arg(long)]
    pub random_state: Option<u32>,
    /// The reading columns to fit on, in feature order: `value` (raw readings), or statistics
    /// of closed windows (`mean,std`). Default: each model's own.
    #[arg(long, value_delimiter = ',')]
    pub features: Option<Vec<String>>,
    /// Only the models whose `device/tag` matches this pattern (`*` matches any run of
    /// characters: `pump-*/temp`).
    #[arg(long, conflicts_with = "unhealthy")]
    pub models: Option<String>,
    /// Only the models the health check flags (`fleetscore models health`).
    #[arg(long)]
    pub unhealthy: bool,
    /// Sensors with fewer rows in the window are skipped, with the reason.
    #[arg(long, default_value_t = DEFAULT_MIN_ROWS)]
    pub min_rows: usize,
    /// List what would be fitted, and fit nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Worker threads in this process (default: all cores); 0 leaves the tasks to
    /// `fleetscore worker` processes sharing the coordinator and the store.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Plan the run into the coordinator and return at once; workers elsewhere execute it.
    #[arg(long)]
    pub detach: bool,
    /// Most models per shard task.
    #[arg(long, default_value_t = 1_000)]
    pub max_models_per_task: usize,
    /// Run id (default: `train-` and the window).
    #[arg(long)]
    pub run_id: Option<String>,
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

impl TrainArgs {
    fn estimator(&self) -> Result<Option<Estimator>> {
        let Some(kind) = self.estimator else {
            return Ok(None);
        };
        let estimator = match kind {
            EstimatorKind::Ocsvm => {
                let scaler = match self.scaler {
                    ScalerKind::Standard => Scaler::Standard,
                    ScalerKind::Minmax => Scaler::Minmax { min: 0.0, max: 1.0 },
                    ScalerKind::None => Scaler::None,
                };
                let Estimator::Ocsvm {
                    shrinking,
                    max_iter,
                    ..
                } = Estimator::ocsvm(scaler)
                else {
                    unreachable!("ocsvm() makes a OneClassSVM")
                };
                Estimator::Ocsvm {
                    scaler,
                    kernel: self.kernel.clone(),
                    nu: self.nu,
                    gamma: self.gamma.clone(),
                    degree: self.degree,
                    coef0: self.coef0,
                    tol: self.tol,
                    shrinking,
                    max_iter,
                }
            }
            EstimatorKind::Iforest => Estimator::Iforest {
                n_estimators: self.n_estimators,
                max_samples: self.max_samples.clone(),
                contamination: self.contamination.clone(),
                max_features: self.max_features.clone(),
                bootstrap: self.bootstrap,
                random_state: self.random_state,
            },
        };
        estimator
            .validate()
            .map_err(|e| anyhow::anyhow!("--estimator {kind:?}: {e}"))?;
        Ok(Some(estimator))
    }
}

/// `fleetscore train`.
pub fn train(args: &StoreArgs, a: TrainArgs) -> Result<ExitCode> {
    let store = args.open()?;
    let (from, to) = match (&a.from, &a.to, a.last) {
        (Some(from), Some(to), None) => (parse_time(from, "from")?, parse_time(to, "to")?),
        (None, None, Some(last)) => last_window(last, run::now_ms())?,
        _ => bail!("give --from and --to, or --last"),
    };
    let estimator = a.estimator()?;
    if let Some(features) = &a.features {
        registry::FeatureSource::of(features).context("--features")?;
    }
    // Which models: all, a pattern's, or the unhealthy ones.
    let models = registry::list(&store)?;
    let select: BTreeSet<(String, String)> = if a.unhealthy {
        let report = fleetscore_monitor::health_report(store.clone(), Default::default());
        for p in &report.problems {
            eprintln!("warning: {p}");
        }
        report
            .attention
            .iter()
            .map(|m| (m.device.clone(), m.tag.clone()))
            .collect()
    } else {
        models
            .iter()
            .filter(|m| {
                a.models
                    .as_deref()
                    .is_none_or(|p| glob(p, &format!("{}/{}", m.device, m.tag)))
            })
            .map(|m| (m.device.clone(), m.tag.clone()))
            .collect()
    };
    if a.dry_run {
        let mut out = String::new();
        for m in models
            .iter()
            .filter(|m| select.contains(&(m.device.clone(), m.tag.clone())))
        {
            let fit = match &estimator {
                Some(e) => e.describe(),
                None => format!("like current ({})", m.estimator),
            };
            let features = a.features.as_ref().unwrap_or(&m.features).join(",");
            out.push_str(&format!(
                "{}/{}\t{}\treplaces {}\tfeatures {features}\n",
                m.device, m.tag, fit, m.version
            ));
        }
        print!("{out}");
        println!(
            "dry run: {} models would be fitted on [{}, {}); nothing was fitted",
            select.len(),
            run::rfc3339(from),
            run::rfc3339(to)
        );
        return Ok(ExitCode::SUCCESS);
    }
    if select.is_empty() {
        bail!(
            "no model to train: {}",
            if a.unhealthy {
                "the health check flags none"
            } else {
                "none matches --models"
            }
        );
    }
    let seed = a.random_state.unwrap_or_else(|| {
        // Any seed; kept in each model's metadata, the same for every model and attempt.
        (run::now_ms() as u64 ^ u64::from(std::process::id()).rotate_left(32)) as u32
    });
    let coordinator = args.coordinator()?;
    let mut options = RunOptions {
        max_models_per_task: a.max_models_per_task.max(1),
        model_limits: args.model_limits(),
        ..RunOptions::default()
    };
    if let Some(w) = a.workers {
        options.workers = w;
    }
    let request = RunRequest {
        run_id: Some(
            a.run_id
                .clone()
                .unwrap_or_else(|| format!("train-{}", run::run_id_for(from, to))),
        ),
        select: Some(select),
        train: Some(TrainTask {
            estimator,
            min_rows: a.min_rows.max(1),
            seed,
        }),
        features: a.features.clone(),
        ..RunRequest::window(from, to).with_options(options)
    };
    let Some(record) = plan_or_run(
        &store,
        coordinator.as_ref(),
        &request,
        a.detach,
        "training run",
    )?
    else {
        return Ok(ExitCode::SUCCESS);
    };
    println!(
        "training run {}: {} — {} models fitted and made current, {} skipped (too few rows or no data), {} failed; {} training rows; {} tasks ({} failed) in {:.2}s",
        record.run_id,
        record.status,
        record.models_scored,
        record.models_without_data,
        record.models_failed,
        record.rows,
        record.tasks,
        record.tasks_failed,
        record.execute_seconds,
    );
    Ok(report_failures(&record))
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn patterns_match_device_and_tag() {
        assert!(glob("*", "a/b"));
        assert!(glob("pump-*/temp", "pump-7/temp"));
        assert!(!glob("pump-*/temp", "pump-7/flow"));
        assert!(glob("*/temp", "x/temp"));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(!glob("a*b*c", "aXcYb"));
        assert!(glob("exact/1", "exact/1"));
        assert!(!glob("ab*ba", "aba"));
    }
}
