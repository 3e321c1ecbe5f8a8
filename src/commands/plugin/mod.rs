//! `hookgate plugin new|check`: a plugin author's first steps.

mod check;
mod new;

use std::process::ExitCode;

use crate::cli::PluginAction;

pub async fn run(action: PluginAction) -> anyhow::Result<ExitCode> {
    match action {
        PluginAction::New { name, lang, dir } => new::run(&name, lang, dir),
        PluginAction::Check { file, with, config } => check::run(&file, &with, &config.config).await,
    }
}
