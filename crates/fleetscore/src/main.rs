//! The `fleetscore` command line: parses arguments and hands each subcommand to its module.

mod models_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Score a fleet's scikit-learn anomaly models natively.
#[derive(Debug, Parser)]
#[command(name = "fleetscore", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load, inspect and score scikit-learn models (pickle and joblib files).
    Models {
        #[command(subcommand)]
        command: models_cmd::ModelsCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Models { command } => models_cmd::run(command),
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
