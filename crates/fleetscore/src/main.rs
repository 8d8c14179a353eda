//! The `fleetscore` command line: parses arguments and hands each subcommand to its module.

mod aggregate_cmd;
mod autoscale;
mod demo;
mod fleet_cmd;
mod ingest_cmd;
mod models_cmd;
mod schedule_cmd;
mod serve_cmd;
mod tls_args;
mod train_cmd;
mod up_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc keeps freed memory for reuse instead of handing large blocks back to the kernel:
/// with glibc's allocator, every task's multi-megabyte column buffers were mapped, faulted in
/// and unmapped again (60,000 page faults in a 5,000-model run instead of 1,000, and a quarter
/// more CPU time).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Score a fleet's scikit-learn anomaly models natively.
#[derive(Debug, Parser)]
#[command(name = "fleetscore", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    store: fleet_cmd::StoreArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load, inspect and score scikit-learn models (pickle and joblib files).
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Readings in the store.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Score every model against its readings in a window, on all cores.
    Run(fleet_cmd::RunArgs),
    /// Fit new versions of the models on their sensors' history in a window, with
    /// scikit-learn's numbers (OneClassSVM, IsolationForest), and make them current.
    Train(Box<train_cmd::TrainArgs>),
    /// Execute the tasks of every run in a shared coordinator (PostgreSQL) and store: a
    /// stateless worker, one of many on many machines.
    Worker(fleet_cmd::WorkerArgs),
    /// Keep between --min and --max worker processes on this machine from the coordinator's
    /// queue depth (down to zero when idle).
    Autoscale(autoscale::AutoscaleArgs),
    /// The workers the coordinator has seen: what they hold, what they did, when they were
    /// last seen.
    Workers(fleet_cmd::WorkersArgs),
    /// Past and current runs.
    Runs {
        #[command(subcommand)]
        command: fleet_cmd::RunsCommand,
    },
    /// A run's predictions.
    Predictions {
        #[command(subcommand)]
        command: fleet_cmd::PredictionsCommand,
    },
    /// Schedules: windows scored by themselves, on an interval or a cron expression.
    Schedule {
        #[command(subcommand)]
        command: schedule_cmd::ScheduleCommand,
    },
    /// Fire every schedule's due ticks and execute their runs (a long-running process; several
    /// on one PostgreSQL coordinator fire each tick once).
    Scheduler(schedule_cmd::SchedulerArgs),
    /// Run a schedule's windows over a past range.
    Backfill(schedule_cmd::BackfillArgs),
    /// The whole pipeline in one process: ingest, aggregation, the scheduler and workers, on
    /// the embedded defaults under one folder (`--demo`: a live simulated fleet).
    Up(up_cmd::UpArgs),
    /// Readings in over HTTP, into the durable log.
    Ingest {
        #[command(subcommand)]
        command: ingest_cmd::IngestCommand,
    },
    /// Readings from the log into event-time windows (features) in the store.
    Aggregate {
        #[command(subcommand)]
        command: aggregate_cmd::AggregateCommand,
    },
    /// The durable log of ingested readings.
    Log {
        #[command(subcommand)]
        command: ingest_cmd::LogCommand,
    },
    /// The monitor: a dashboard, a JSON API (/api/v1/) and /metrics over the store, the
    /// coordinator and (with --log-dir) the ingest log. Read-only.
    Serve(serve_cmd::ServeArgs),
}

/// `fleetscore models ...`: files on disk, and the registry in the store.
#[derive(Debug, Subcommand)]
enum ModelsCommand {
    #[command(flatten)]
    File(models_cmd::ModelsCommand),
    #[command(flatten)]
    Registry(fleet_cmd::RegistryCommand),
    #[command(flatten)]
    Health(serve_cmd::HealthCommand),
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Import CSV or Parquet readings (time, device, tag, value) into the store, partitioned
    /// by hour and device bucket.
    Import(fleet_cmd::DataImportArgs),
}

/// Libraries log through `tracing`; the binary writes their events to standard error, one line
/// each, at the level `FLEETSCORE_LOG` names (`error`, `warn`, `info` (default), `debug`,
/// `trace`). Standard output stays for what a command prints as its result.
fn init_logging() {
    let level = std::env::var("FLEETSCORE_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// A reader that stops reading (`fleetscore runs list | head`) ends the process the way it ends
/// `ls` or `grep`: quietly, with the status a SIGPIPE gives (128 + 13), not with a panic
/// message. Rust ignores SIGPIPE, so `println!` into a closed pipe panics instead.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    quiet_broken_pipe();
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Models {
            command: ModelsCommand::File(command),
        } => models_cmd::run(command, &cli.store.model_limits()),
        Command::Models {
            command: ModelsCommand::Registry(command),
        } => fleet_cmd::registry(&cli.store, command),
        Command::Models {
            command: ModelsCommand::Health(command),
        } => serve_cmd::health(&cli.store, command),
        Command::Data {
            command: DataCommand::Import(args),
        } => fleet_cmd::data_import(&cli.store, args),
        Command::Run(args) => fleet_cmd::run(&cli.store, args),
        Command::Train(args) => train_cmd::train(&cli.store, *args),
        Command::Worker(args) => fleet_cmd::worker(&cli.store, args),
        Command::Workers(args) => fleet_cmd::workers(&cli.store, args),
        Command::Autoscale(args) => autoscale::run(&cli.store, args),
        Command::Runs { command } => fleet_cmd::runs(&cli.store, command),
        Command::Predictions { command } => fleet_cmd::predictions(&cli.store, command),
        Command::Schedule { command } => schedule_cmd::schedule(&cli.store, command),
        Command::Scheduler(args) => schedule_cmd::scheduler(&cli.store, args),
        Command::Backfill(args) => schedule_cmd::backfill(&cli.store, args),
        Command::Up(args) => up_cmd::up(&cli.store, args),
        Command::Ingest { command } => ingest_cmd::ingest(command),
        Command::Aggregate { command } => aggregate_cmd::aggregate(&cli.store, command),
        Command::Log { command } => ingest_cmd::log(command),
        Command::Serve(args) => serve_cmd::serve(&cli.store, args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // A closed pipe (`fleetscore ... | head`) is not a failure.
            if err.chain().any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
