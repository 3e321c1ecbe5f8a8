//! `hookgate`: the webhook dispatch gateway's command line.

mod api;
mod cli;
mod commands;
mod logging;
mod plugins;
mod schema;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: under load, glibc's arenas contend on their locks
/// (a fifth of the delivery path's time in `cargo bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
