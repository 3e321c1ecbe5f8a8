//! `hookgate send TEMPLATE [PAYLOAD.json|-]`: one dispatch without a server.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use hookgate_core::payload::Payload;

pub async fn run(dir: &Path, name: &str, payload_arg: &str) -> anyhow::Result<ExitCode> {
    let bytes = if payload_arg == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).context("cannot read the payload from standard input")?;
        buf
    } else {
        std::fs::read(payload_arg).with_context(|| format!("cannot read {payload_arg}"))?
    };
    let payload = Payload::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{payload_arg}: {e}"))?;
    let campaign = payload.campaign.clone();
    let engine = super::one_shot_engine(dir).await?;
    let accepted = engine.dispatcher.dispatch(name, payload, None).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!(
        "dispatch {} through `{name}`: {} request(s), {} profile(s)",
        accepted.dispatch_id, accepted.requests, accepted.profiles
    );
    let show_progress = accepted.requests > 1 && std::io::stderr().is_terminal();
    engine
        .records
        .wait_finished(accepted.dispatch_id, |done, total| {
            if show_progress {
                let width = 30;
                let filled = done * width / total.max(1);
                eprint!("\r[{}{}] {done}/{total} requests", "#".repeat(filled), "-".repeat(width - filled));
                let _ = std::io::stderr().flush();
            }
        })
        .await;
    if show_progress {
        eprintln!();
    }
    let Some(stats) = engine.stats.campaign(&campaign) else {
        anyhow::bail!("no stats were recorded for campaign {campaign}");
    };
    let s = &stats.total;
    println!("campaign {campaign}");
    println!(
        "  requests: {} delivered, {} failed, {} pending",
        s.requests.delivered, s.requests.failed, s.requests.pending
    );
    println!(
        "  profiles: {} delivered, {} failed, {} pending",
        s.profiles.delivered, s.profiles.failed, s.profiles.pending
    );
    for e in &s.errors {
        println!("  error: {} ({}) x{}", e.error, e.reason, e.count);
    }
    println!(
        "  attempts: {}; latency ms: mean {:.1}, p50 <= {}, p99 <= {}, max {:.1}",
        s.latency_ms.count, s.latency_ms.mean, s.latency_ms.p50, s.latency_ms.p99, s.latency_ms.max
    );
    let failed = s.requests.failed > 0;
    engine.shutdown(engine.settings.config.shutdown_grace).await;
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
