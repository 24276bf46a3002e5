//! The `odgm-sim` command line.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    odgm_sim::cli::run(odgm_sim::cli::Cli::parse())
}
