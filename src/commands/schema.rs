//! `hookgate schema template|config|openapi`: the JSON Schemas of a template file and of
//! hookgate.yaml, and the HTTP API's OpenAPI document, as committed in `schemas/`.

use std::process::ExitCode;

use crate::cli::SchemaOf;

pub fn run(of: SchemaOf) -> anyhow::Result<ExitCode> {
    println!("{}", text(of)?);
    Ok(ExitCode::SUCCESS)
}

/// What `hookgate schema OF` prints (without the final line break).
pub fn text(of: SchemaOf) -> anyhow::Result<String> {
    Ok(match of {
        SchemaOf::Template => serde_json::to_string_pretty(&crate::schema::template())?,
        SchemaOf::Config => serde_json::to_string_pretty(&hookgate_core::schema::config())?,
        SchemaOf::Openapi => crate::api::openapi::document(),
    })
}
