//! `m3`: the command-line interface of the M³ engine.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "m3", version, about = "M³ disk-resident vector index engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {}

// `Command` has no variants yet, so `Cli` is uninhabited; remove the allow with the first one.
#[allow(unreachable_code)]
fn main() -> anyhow::Result<()> {
    match Cli::parse().command {}
}
