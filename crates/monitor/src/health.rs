//! Model health: flags for a model that calls (almost) every reading an anomaly, one whose
//! anomaly rate moved far from its own usual rate, one whose sensor went silent, and one that
//! fails — decided from what its recent runs did to it. Pure: observations in, flags out.

use serde::{Deserialize, Serialize};

use fleetscore_jobs::coordinator::FailureKind;

/// The thresholds health is judged by (every one an option of `serve` and `models health`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HealthOptions {
    /// How many of the most recent finished runs are looked at.
    pub runs: usize,
    /// A model whose anomaly rate over those runs is at least this is "always anomalous".
    pub always_rate: f64,
    /// The fewest rows (over those runs, and in the latest run for drift) a rate is judged on.
    pub min_rows: u64,
    /// Drift needs at least this many earlier scored runs to know a model's usual rate.
    pub drift_min_runs: usize,
    /// The latest rate must differ from the usual (median) rate by at least this much...
    pub drift_min_delta: f64,
    /// ...and by this many robust standard deviations (1.4826 × the median absolute
    /// deviation) of the earlier rates.
    pub drift_sigmas: f64,
    /// A model without rows in this many of its latest runs in a row is "silent".
    pub silent_runs: usize,
}

impl Default for HealthOptions {
    fn default() -> HealthOptions {
        HealthOptions {
            runs: 48,
            always_rate: 0.99,
            min_rows: 10,
            drift_min_runs: 5,
            drift_min_delta: 0.2,
            drift_sigmas: 4.0,
            silent_runs: 3,
        }
    }
}

/// What one run did to a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Scored: its rows and how many were flagged.
    Scored {
        /// Rows scored.
        rows: u32,
        /// Rows predicted as anomalies.
        anomalies: u32,
    },
    /// Its sensor had no rows in the run's window.
    NoData,
    /// It failed.
    Failed(FailureKind),
    /// Not known: the run had a task that failed for good, which may have held the model.
    Unknown,
}

impl Outcome {
    /// The anomaly rate, for a scored run with rows.
    pub fn rate(self) -> Option<f64> {
        match self {
            Outcome::Scored { rows, anomalies } if rows > 0 => {
                Some(f64::from(anomalies) / f64::from(rows))
            }
            _ => None,
        }
    }
}

/// One flag, with the numbers it was raised on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "flag", rename_all = "snake_case")]
pub enum Flag {
    /// It calls (almost) every reading an anomaly.
    AlwaysAnomalous {
        /// Its anomaly rate over the recent runs.
        rate: f64,
        /// Rows that rate is over.
        rows: u64,
    },
    /// Its latest anomaly rate is far from its usual one.
    Drift {
        /// The latest run's rate.
        latest_rate: f64,
        /// The median rate of the runs before.
        usual_rate: f64,
    },
    /// No rows in its latest runs: a silent sensor.
    Silent {
        /// Runs in a row without rows, the latest included.
        runs: u32,
    },
    /// Its latest run that got to it failed it.
    Failing {
        /// What failed.
        kind: FailureKind,
        /// Recent runs that failed it.
        runs: u32,
    },
}

/// Every flag kind, in the order the dashboard and reports list them.
pub const FLAG_KINDS: [&str; 4] = ["always_anomalous", "drift", "silent", "failing"];

impl Flag {
    /// The flag's name as serialized (`always_anomalous`, `drift`, `silent`, `failing`).
    pub fn kind(&self) -> &'static str {
        match self {
            Flag::AlwaysAnomalous { .. } => FLAG_KINDS[0],
            Flag::Drift { .. } => FLAG_KINDS[1],
            Flag::Silent { .. } => FLAG_KINDS[2],
            Flag::Failing { .. } => FLAG_KINDS[3],
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Flag::AlwaysAnomalous { rate, rows } => format!(
                "always anomalous: {:.1}% of {rows} rows flagged",
                rate * 100.0
            ),
            Flag::Drift {
                latest_rate,
                usual_rate,
            } => format!(
                "anomaly rate moved: {:.1}% in the latest run, usually {:.1}%",
                latest_rate * 100.0,
                usual_rate * 100.0
            ),
            Flag::Silent { runs } => format!("silent: no data in its latest {runs} runs"),
            Flag::Failing { kind, runs } => format!(
                "failing ({}): failed in {runs} recent run{}",
                kind.as_str(),
                if *runs == 1 { "" } else { "s" }
            ),
        }
    }
}

/// A model's health: its flags (none when healthy) and its recent anomaly rate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Raised flags.
    pub flags: Vec<Flag>,
    /// Anomaly rate over the recent scored runs, if any had rows.
    pub rate: Option<f64>,
    /// Rows scored in the recent runs.
    pub rows: u64,
    /// Recent runs that scored it.
    pub scored_runs: u32,
}

impl Health {
    /// Whether the model needs attention.
    pub fn flagged(&self) -> bool {
        !self.flags.is_empty()
    }

    /// Whether it has the flag named `kind`.
    pub fn has(&self, kind: &str) -> bool {
        self.flags.iter().any(|f| f.kind() == kind)
    }
}

/// Judges a model from its recent runs' outcomes, oldest first (only runs that could have
/// scored it: after its current version was imported).
pub fn assess(outcomes: &[Outcome], o: &HealthOptions) -> Health {
    let start = outcomes.len().saturating_sub(o.runs);
    let recent = &outcomes[start..];
    let mut health = Health::default();
    let (mut rows, mut anomalies) = (0u64, 0u64);
    for out in recent {
        if let Outcome::Scored {
            rows: r,
            anomalies: a,
        } = *out
        {
            rows += u64::from(r);
            anomalies += u64::from(a);
            health.scored_runs += 1;
        }
    }
    health.rows = rows;
    if rows > 0 {
        health.rate = Some(anomalies as f64 / rows as f64);
    }
    if let Some(rate) = health.rate
        && rows >= o.min_rows.max(1)
        && rate >= o.always_rate
    {
        health.flags.push(Flag::AlwaysAnomalous { rate, rows });
    }
    if let Some(flag) = drift(recent, o) {
        health.flags.push(flag);
    }
    let known: Vec<Outcome> = recent
        .iter()
        .copied()
        .filter(|x| *x != Outcome::Unknown)
        .collect();
    let silent = known
        .iter()
        .rev()
        .take_while(|x| matches!(x, Outcome::NoData | Outcome::Scored { rows: 0, .. }))
        .count();
    if o.silent_runs > 0 && silent >= o.silent_runs {
        health.flags.push(Flag::Silent {
            runs: silent as u32,
        });
    }
    let latest = known.iter().rev().find(|x| !matches!(x, Outcome::NoData));
    if let Some(Outcome::Failed(kind)) = latest {
        let runs = known
            .iter()
            .filter(|x| matches!(x, Outcome::Failed(_)))
            .count();
        health.flags.push(Flag::Failing {
            kind: *kind,
            runs: runs as u32,
        });
    }
    health
}

/// The drift flag: the latest scored run's rate against the median of the scored runs before
/// it, when the difference passes both the absolute and the robust-spread thresholds.
fn drift(recent: &[Outcome], o: &HealthOptions) -> Option<Flag> {
    let scored: Vec<(u32, f64)> = recent
        .iter()
        .filter_map(|x| match *x {
            Outcome::Scored { rows, .. } => x.rate().map(|r| (rows, r)),
            _ => None,
        })
        .collect();
    let (&(latest_rows, latest_rate), before) = scored.split_last()?;
    if before.len() < o.drift_min_runs.max(1) || u64::from(latest_rows) < o.min_rows {
        return None;
    }
    let mut rates: Vec<f64> = before.iter().map(|&(_, r)| r).collect();
    let usual = median(&mut rates);
    let mut deviations: Vec<f64> = rates.iter().map(|r| (r - usual).abs()).collect();
    let spread = 1.4826 * median(&mut deviations);
    let delta = (latest_rate - usual).abs();
    (delta >= o.drift_min_delta && delta > o.drift_sigmas * spread).then_some(Flag::Drift {
        latest_rate,
        usual_rate: usual,
    })
}

/// The median of `values` (sorted in place); 0 for none.
fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(rows: u32, anomalies: u32) -> Outcome {
        Outcome::Scored { rows, anomalies }
    }

    fn kinds(h: &Health) -> Vec<&'static str> {
        h.flags.iter().map(Flag::kind).collect()
    }

    #[test]
    fn a_model_that_flags_every_reading_is_always_anomalous() {
        let o = HealthOptions::default();
        let h = assess(&[scored(1184, 1184)], &o);
        assert_eq!(kinds(&h), ["always_anomalous"]);
        assert_eq!(h.rate, Some(1.0));
        // One reading in a hundred not flagged still counts; a handful of rows does not.
        assert!(assess(&[scored(1000, 990)], &o).has("always_anomalous"));
        assert!(!assess(&[scored(1000, 989)], &o).flagged());
        assert!(!assess(&[scored(5, 5)], &o).flagged());
    }

    #[test]
    fn drift_is_judged_against_the_models_own_usual_rate() {
        let o = HealthOptions::default();
        let usual = [
            scored(100, 2),
            scored(100, 3),
            scored(100, 1),
            scored(100, 2),
            scored(100, 4),
        ];
        let mut runs = usual.to_vec();
        runs.push(scored(100, 3));
        assert!(!assess(&runs, &o).flagged(), "within its usual range");
        runs.push(scored(100, 60));
        let h = assess(&runs, &o);
        assert_eq!(
            h.flags,
            [Flag::Drift {
                latest_rate: 0.6,
                usual_rate: 0.025
            }]
        );
        // Too little history: no judgement.
        assert!(!assess(&[scored(100, 2), scored(100, 60)], &o).flagged());
        // A noisy model's usual spread is wide: a move inside it is not drift.
        let noisy: Vec<Outcome> = [10, 50, 15, 45, 20, 40, 48]
            .iter()
            .map(|&a| scored(100, a))
            .collect();
        assert!(!assess(&noisy, &o).has("drift"));
    }

    #[test]
    fn silence_and_failure_are_read_from_the_latest_runs() {
        let o = HealthOptions::default();
        let silent = [
            scored(50, 0),
            Outcome::NoData,
            Outcome::Unknown,
            Outcome::NoData,
            Outcome::NoData,
        ];
        assert_eq!(assess(&silent, &o).flags, [Flag::Silent { runs: 3 }]);
        assert!(
            !assess(&silent[..4], &o).flagged(),
            "two runs are not yet silence"
        );
        let failing = [
            Outcome::Failed(FailureKind::Load),
            scored(50, 0),
            Outcome::Failed(FailureKind::Load),
            Outcome::NoData,
        ];
        assert_eq!(
            assess(&failing, &o).flags,
            [Flag::Failing {
                kind: FailureKind::Load,
                runs: 2
            }]
        );
        // Fixed since: the latest run that got to it scored it.
        assert!(!assess(&failing[..2], &o).flagged());
        // Only the recent runs count.
        let o1 = HealthOptions { runs: 1, ..o };
        assert!(!assess(&[scored(100, 100), scored(100, 0)], &o1).flagged());
    }
}
