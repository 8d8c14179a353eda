//! `fleetscore models ...`: inspect a model file, score a table with it, or benchmark it.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use fleetscore_jobs::score_file::{ScoreFile, Scored, feature_columns, score_file};
use fleetscore_models::{Limits, Model};
use fleetscore_table::feature_matrix;

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Score a CSV or Parquet table: writes every input column plus `score`
    /// (decision_function) and `anomaly` (1 where predict gives -1, else 0).
    Score(ScoreArgs),
    /// Show what a model file holds: format, estimators, features, version, parameters.
    Inspect {
        /// The model file (pickle or joblib, any compression).
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Time loading a model and scoring rows with it, in this process; prints JSON.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// The model file (pickle or joblib, any compression).
    model: PathBuf,
    /// Input table (.csv or .parquet).
    #[arg(long, short)]
    input: PathBuf,
    /// Output table (.csv or .parquet); the format may differ from the input's.
    #[arg(long, short)]
    output: PathBuf,
    /// Input columns that feed the model, in the model's feature order. Defaults to the
    /// feature names stored in the model, if it was fitted on a DataFrame.
    #[arg(long, short, value_delimiter = ',')]
    features: Vec<String>,
    /// Score only rows where COLUMN equals VALUE (repeatable; all must hold).
    #[arg(long = "where", value_name = "COLUMN=VALUE", value_parser = parse_condition)]
    conditions: Vec<(String, String)>,
    /// Threads to score with (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Rows read and scored per batch.
    #[arg(long, default_value_t = 65_536)]
    batch_rows: usize,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The model file.
    model: PathBuf,
    /// Table whose rows to score (default: synthetic rows).
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Feature columns of --input.
    #[arg(long, short, value_delimiter = ',')]
    features: Vec<String>,
    /// Synthetic rows to score when no --input is given.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Timed repetitions; the best is reported.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Threads to score with (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

fn parse_condition(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected COLUMN=VALUE, got {s:?}"))?;
    Ok((k.trim().to_string(), v.to_string()))
}

pub fn run(command: ModelsCommand, limits: &Limits) -> Result<ExitCode> {
    match command {
        ModelsCommand::Score(args) => score(args, limits),
        ModelsCommand::Inspect { model, json } => inspect(&model, json, limits),
        ModelsCommand::Bench(args) => bench(args, limits),
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn load_model(path: &Path, limits: &Limits) -> Result<Model> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Model::from_bytes_within(&bytes, limits)
        .with_context(|| format!("cannot load model {}", path.display()))
}

fn inspect(path: &Path, json: bool, limits: &Limits) -> Result<ExitCode> {
    let model = load_model(path, limits)?;
    let info = model.info();
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, info)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "file:         {}", path.display())?;
    writeln!(out, "format:       {}", info.format)?;
    writeln!(out, "estimator:    {}", info.estimator)?;
    writeln!(out, "n_features:   {}", info.n_features)?;
    match &info.feature_names {
        Some(names) => writeln!(out, "features:     {}", names.join(", "))?,
        None => writeln!(out, "features:     (names not stored)")?,
    }
    writeln!(
        out,
        "scikit-learn: {}",
        info.sklearn_version.as_deref().unwrap_or("(not stored)")
    )?;
    for step in &info.steps {
        writeln!(out, "step {}: {}", step.name, step.class)?;
        let params: Vec<String> = step
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !params.is_empty() {
            writeln!(out, "  params: {}", params.join(" "))?;
        }
        let fitted: Vec<String> = step
            .fitted
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !fitted.is_empty() {
            writeln!(out, "  fitted: {}", fitted.join(" "))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn score(args: ScoreArgs, limits: &Limits) -> Result<ExitCode> {
    let started = Instant::now();
    let model = load_model(&args.model, limits)?;
    let columns = feature_columns(&model, &args.features)?;
    if let Some(names) = &model.info().feature_names
        && *names != columns
    {
        eprintln!(
            "warning: the model was fitted on features {} and is given columns {}",
            names.join(","),
            columns.join(",")
        );
    }
    let request = ScoreFile {
        input: &args.input,
        output: &args.output,
        columns: &columns,
        conditions: &args.conditions,
        threads: args.threads.unwrap_or_else(default_threads).max(1),
        batch_rows: args.batch_rows,
    };
    let progress = Progress::new();
    let scored = score_file(&model, &request, &mut |rows| progress.update(rows));
    progress.clear();
    let Scored { rows, anomalies } = scored?;
    eprintln!(
        "scored {rows} rows with {} ({anomalies} anomalies) in {:.2?} -> {}",
        model.info().estimator,
        started.elapsed(),
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A row counter on stderr, only when stderr is a terminal and the job takes a while.
struct Progress {
    enabled: bool,
    started: Instant,
    last: std::cell::Cell<Instant>,
}

impl Progress {
    fn new() -> Progress {
        let now = Instant::now();
        Progress {
            enabled: std::io::stderr().is_terminal(),
            started: now,
            last: std::cell::Cell::new(now),
        }
    }

    fn update(&self, rows: u64) {
        if !self.enabled || self.last.get().elapsed() < Duration::from_millis(250) {
            return;
        }
        self.last.set(Instant::now());
        let secs = self.started.elapsed().as_secs_f64();
        eprint!(
            "\r\x1b[2Kscoring: {rows} rows, {:.0} rows/s",
            rows as f64 / secs.max(1e-9)
        );
    }

    fn clear(&self) {
        if self.enabled && self.last.get() != self.started {
            eprint!("\r\x1b[2K");
        }
    }
}

fn bench(args: BenchArgs, limits: &Limits) -> Result<ExitCode> {
    let bytes = std::fs::read(&args.model)
        .with_context(|| format!("cannot read {}", args.model.display()))?;
    // Loading: repeat for at least ~0.2 s to time a microsecond-scale operation.
    let mut loads = 0u32;
    let t = Instant::now();
    let mut model = None;
    let mut charged = 0;
    while loads < 3 || t.elapsed() < Duration::from_millis(200) {
        let (m, bytes_charged) = Model::from_bytes_measured(&bytes, limits)
            .with_context(|| format!("cannot load model {}", args.model.display()))?;
        (model, charged) = (Some(m), bytes_charged);
        loads += 1;
    }
    let load_seconds = t.elapsed().as_secs_f64() / f64::from(loads);
    let model = model.expect("loaded at least once");
    let d = model.n_features();
    let x = match &args.input {
        Some(path) => {
            let columns = feature_columns(&model, &args.features)?;
            let mut all = Vec::new();
            let mut buf = Vec::new();
            let mut reader = fleetscore_table::open(path, 65_536)?;
            loop {
                let start = reader.next_position();
                let Some(batch) = reader.next() else { break };
                feature_matrix(&batch?, &columns, start, &mut buf)?;
                all.extend_from_slice(&buf);
            }
            all
        }
        None => {
            // Deterministic pseudo-random rows in [-3, 3).
            let mut state = 0x9E37_79B9_7F4A_7C15u64;
            (0..args.rows * d)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 11) as f64 / (1u64 << 53) as f64 * 6.0 - 3.0
                })
                .collect()
        }
    };
    let rows = x.len() / d.max(1);
    let threads = args.threads.unwrap_or_else(default_threads).max(1);
    let mut decision = vec![0.0; rows];
    let mut predicted = vec![0i8; rows];
    let mut best = f64::INFINITY;
    for _ in 0..args.repeat.max(1) {
        let t = Instant::now();
        model.score_parallel(&x, &mut decision, &mut predicted, threads)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    let anomalies = predicted.iter().filter(|&&p| p == -1).count();
    let report = serde_json::json!({
        "model": args.model.display().to_string(),
        "estimator": model.info().estimator,
        "file_bytes": bytes.len(),
        "load_seconds": load_seconds,
        "load_memory_bytes": charged,
        "rows": rows,
        "threads": threads,
        "score_seconds": best,
        "rows_per_second": rows as f64 / best,
        "anomalies": anomalies,
    });
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}
