//! `hearth`: one binary for every role.
//!
//! - `hearth up`: a manager and a local agent in one process, on embedded SQLite.
//! - `hearth manager` / `hearth agent`: the two halves, for clusters.
//! - everything else: the CLI, talking to a manager's REST API with the same types the
//!   server uses. Human tables by default, `--json` for scripts.

mod cli;
mod serve;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
