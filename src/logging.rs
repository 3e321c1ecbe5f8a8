//! Logs go to standard error, as text (for people) or as one JSON object per line (for log
//! stores: `log_format: json`); `RUST_LOG` overrides the config's `log` filter.
//!
//! A JSON line has `timestamp`, `level`, `target`, `message` and the event's fields at the
//! top level (`template`, `campaign`, `reason`, ...), and `span` with the fields of the
//! delivery it belongs to (`dispatch`, `request`, `delivery_id`, `attempt`). What is logged
//! is the same in both formats: secrets never reach a log line (see README, "Security").

use std::io::IsTerminal;

use hookgate_core::config::LogFormat;
use tracing_subscriber::EnvFilter;

pub fn init(default_filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).with_target(false).try_init(),
        LogFormat::Json => {
            builder.json().flatten_event(true).with_current_span(true).with_span_list(false).with_ansi(false).try_init()
        }
    };
}
