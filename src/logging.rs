//! Logs go to standard error, as text (for people) or as one JSON object per line (for log
//! stores: `log_format: json`); `RUST_LOG` overrides the config's `log` filter.
//!
//! A JSON line has `timestamp`, `level`, `target`, `message` and the event's fields at the
//! top level (`template`, `campaign`, `reason`, ...), and `span` with the fields of the
//! delivery it belongs to (`dispatch`, `request`, `delivery_id`, `attempt`). What is logged
//! is the same in both formats: secrets never reach a log line (see README, "Security").

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use hookgate_core::config::LogFormat;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::fmt::format::{Writer, debug_fn};

pub fn init(default_filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .fmt_fields(
                debug_fn(|w: &mut Writer<'_>, field: &tracing::field::Field, value: &dyn fmt::Debug| {
                    match field.name() {
                        "message" => write!(Escaped(w), "{value:?}"),
                        name => write!(w, "{}={value:?}", name.strip_prefix("r#").unwrap_or(name)),
                    }
                })
                .delimited(" "),
            )
            .try_init(),
        LogFormat::Json => {
            builder.json().flatten_event(true).with_current_span(true).with_span_list(false).with_ansi(false).try_init()
        }
    };
}

/// The text format's fields are plain `name=value` after the message. tracing-subscriber's
/// default styles every field name for a terminal, which costs four times as much, and every
/// delivery's span has four fields, formatted when the span starts (about 10% of the CPU a
/// delivery costs, in a profile of the batch benchmark). Like the default, the message has
/// the control characters of terminal escape sequences escaped.
struct Escaped<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for Escaped<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) =
            rest.find(|c: char| matches!(c, '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'))
        {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().expect("found at a char boundary");
            match c {
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", c as u32)?,
                _ => write!(self.0, "\\x{:02x}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        Escaped(&mut Writer::new(&mut out)).write_str(s).unwrap();
        out
    }

    #[test]
    fn the_message_escapes_terminal_control_characters() {
        assert_eq!(escaped("plain text, ünïcode"), "plain text, ünïcode");
        assert_eq!(escaped("\x1b[31mred\x07\x08\x0c\x7f"), "\\x1b[31mred\\x07\\x08\\x0c\\x7f");
        assert_eq!(escaped("a\u{9b}b\u{85}"), "a\\u{9b}b\\u{85}");
    }
}
