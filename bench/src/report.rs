//! The table for people, the JSON, and the targets, computed from the rows.

use serde::Serialize;

use crate::measure::Row;

/// One target of the table and whether this run held it.
#[derive(Debug, Serialize)]
pub struct Target {
    pub figure: &'static str,
    pub target: &'static str,
    /// The measured figure, as the target states it (a ratio, µs, MB or ms).
    pub value: Option<f64>,
    /// `None` when the rows it needs were not run.
    pub held: Option<bool>,
}

fn row<'a>(rows: &'a [Row], id: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.id == id)
}

/// Every target of issue 13's table, from the rows (a target whose rows were not run, or
/// whose pending rows did not hold 100,000 deliveries, is `not measured`).
pub fn targets(rows: &[Row]) -> Vec<Target> {
    let ratio = |id: &str| row(rows, id).and_then(|r| r.ratio);
    let cpu = |id: &str| row(rows, id).map(|r| r.cpu_us_per_delivery);
    let rate = |id: &str| row(rows, id).map(|r| r.per_second);
    let relative = |a: &str, b: &str| Some(rate(a)? / rate(b)?);
    let at_least = |v: Option<f64>, min: f64| (v, v.map(|v| v >= min));
    let at_most = |v: Option<f64>, max: f64| (v, v.map(|v| v <= max));
    let pending = |id: &str| row(rows, id).filter(|r| r.deliveries >= 100_000).and_then(|r| r.peak_rss_mb);
    let mut out = Vec::new();
    let mut push =
        |figure, target, (value, held): (Option<f64>, Option<bool>)| out.push(Target { figure, target, value, held });
    push("batch, memory", "≥ 0.85 × ceiling", at_least(ratio("batch/memory"), 0.85));
    push("batch, sqlite (durable default)", "≥ 0.6 × ceiling", at_least(ratio("batch/sqlite"), 0.6));
    push("per-message, memory", "≥ 0.5 × ceiling", at_least(ratio("per-message/memory"), 0.5));
    push("per-message, sqlite", "≥ 0.25 × ceiling", at_least(ratio("per-message/sqlite"), 0.25));
    push("hookgate CPU per delivery, batch memory", "≤ 15 µs", at_most(cpu("batch/memory"), 15.0));
    push("hookgate CPU per delivery, batch sqlite", "≤ 25 µs", at_most(cpu("batch/sqlite"), 25.0));
    push(
        "cached OAuth (client credentials) vs none, batch memory",
        "≥ 0.95 × none",
        at_least(relative("batch/memory/oauth2", "batch/memory"), 0.95),
    );
    push(
        "cached JWT assertion vs none, batch memory",
        "≥ 0.95 × none",
        at_least(relative("batch/memory/jwt", "batch/memory"), 0.95),
    );
    push(
        "Standard Webhooks WASM example vs basic, batch memory",
        "≥ 0.9 × basic",
        at_least(relative("batch/memory/standard-webhooks", "batch/memory/basic"), 0.9),
    );
    push(
        "100,000 pending 1 KB deliveries, per-message sqlite: peak RSS MB",
        "≤ 200 MB",
        at_most(pending("pending/per-message/sqlite"), 200.0),
    );
    push(
        "100,000 pending 1 KB deliveries, batch sqlite: peak RSS MB",
        "≤ 200 MB",
        at_most(pending("pending/batch/sqlite"), 200.0),
    );
    let pg = |id: &str| row(rows, id).and_then(|r| r.postgres);
    push(
        "PostgreSQL transactions per delivery, batch",
        "≤ 0.3",
        at_most(pg("batch/postgres").map(|c| c.transactions), 0.3),
    );
    push(
        "PostgreSQL transactions per delivery, per-message",
        "≤ 1.5",
        at_most(pg("per-message/postgres").map(|c| c.transactions), 1.5),
    );
    push(
        "PostgreSQL WAL per delivery (1 KB body), per-message: bytes",
        "≤ 1,500",
        at_most(pg("per-message/postgres").map(|c| c.wal_bytes), 1500.0),
    );
    push(
        "PostgreSQL WAL per delivery (1 KB body), batch: bytes",
        "≤ 1,500",
        at_most(pg("batch/postgres").map(|c| c.wal_bytes), 1500.0),
    );
    push("PostgreSQL one instance, batch: deliveries/s", "≥ 15,000", at_least(rate("batch/postgres"), 15000.0));
    push(
        "PostgreSQL one instance, per-message: deliveries/s",
        "≥ 8,000",
        at_least(rate("per-message/postgres"), 8000.0),
    );
    push(
        "dispatch → arrival at 1,000/s, sqlite: p99 ms",
        "≤ 5 ms",
        at_most(row(rows, "steady/sqlite").and_then(|r| r.p99_ms), 5.0),
    );
    out
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |v| format!("{v:.digits$}"))
}

/// `12345` → `12,345`.
fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The rows and the targets as Markdown tables.
pub fn table(rows: &[Row], targets: &[Target]) -> String {
    let mut out = String::from(
        "| row | deliveries | s | deliveries/s | × ceiling | p50 ms | p99 ms | CPU µs/delivery | cores | sink CPU µs/delivery | peak RSS MB | notes |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        let mut notes = Vec::new();
        if r.id.starts_with("ceiling") {
            notes.push("CPU and cores: the client's".to_string());
        }
        if let Some(rss) = r.pending_rss_mb {
            notes.push(format!(
                "RSS {rss:.0} MB with {} pending; rate: the drain after release",
                thousands(r.deliveries as f64)
            ));
        }
        if let Some(t) = r.token_requests {
            notes.push(format!("{t} token request{}", if t == 1 { "" } else { "s" }));
        }
        if let Some(pg) = r.postgres {
            notes.push(format!(
                "database per delivery: {:.3} transactions, {:.0} B WAL, {:.2} rows written{}",
                pg.transactions,
                pg.wal_bytes,
                pg.rows_written,
                pg.cpu_us.map_or(String::new(), |us| format!(", {us:.0} µs CPU"))
            ));
        }
        if r.id.starts_with("wake-up") {
            notes.push(
                "an idle cluster of two: one dispatch at a time, alternately to each; rate: not a throughput".into(),
            );
        }
        if r.duplicates > 0 {
            notes.push(format!("{} DUPLICATE deliveries", r.duplicates));
        }
        out.push_str(&format!(
            "| {} | {} | {:.2} | {} | {} | {} | {} | {:.1} | {:.2} | {:.1} | {} | {} |\n",
            r.id,
            thousands(r.deliveries as f64),
            r.seconds,
            thousands(r.per_second),
            opt(r.ratio, 2),
            opt(r.p50_ms, 2),
            opt(r.p99_ms, 2),
            r.cpu_us_per_delivery,
            r.cores,
            r.sink_cpu_us_per_delivery,
            opt(r.peak_rss_mb, 0),
            notes.join("; ")
        ));
    }
    out.push_str("\n| target | wanted | measured | |\n|---|---|---:|---|\n");
    for t in targets {
        let held = match t.held {
            Some(true) => "held",
            Some(false) => "NOT held",
            None => "not measured",
        };
        out.push_str(&format!("| {} | {} | {} | {held} |\n", t.figure, t.target, opt(t.value, 2)));
    }
    out
}
