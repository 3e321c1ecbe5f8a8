//! `hookgate-bench`: hookgate end to end through its public API against the machine's
//! ceiling, in one run. See the "Benchmark" section of the README.

mod gateway;
mod measure;
mod pgstats;
mod procfs;
mod raw;
mod report;
mod sink;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use gateway::{Auth, Queue, workspace_root};
use measure::{Bench, Row};

#[derive(Parser)]
#[command(
    name = "hookgate-bench",
    about = "hookgate end to end against the machine's ceiling",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Sub {
    /// The sink the bench starts in its own process (not run by hand).
    Sink {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Print the rows and targets as JSON on standard output (progress goes to standard error).
    #[arg(long)]
    json: bool,
    /// Also run the PostgreSQL rows on this database (a scratch one: the runs' dispatches stay
    /// in it), with a fifth of the deliveries of the other rows.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// A smoke run: 5,000 deliveries a row, 10,000 pending, 2 s of steady load (no figure to quote).
    #[arg(long)]
    quick: bool,
    /// Run only the rows whose id starts with one of these (e.g. `batch/memory`, `per-message`,
    /// `pending`); the two ceiling rows always run.
    #[arg(long, value_name = "ROW", num_args = 1..)]
    only: Vec<String>,
    /// Deliveries per throughput row (default 100,000; 5,000 with --quick).
    #[arg(long)]
    deliveries: Option<u64>,
    /// Connections of the ceiling and of the per-message driver, and the gateway's `workers`
    /// and `destinations.max_concurrency`.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The hookgate binary to measure (default: `cargo build --release -p hookgate` first, then
    /// `target/release/hookgate`).
    #[arg(long, value_name = "PATH")]
    hookgate: Option<PathBuf>,
}

/// What a row does; its id says which.
enum Kind {
    Throughput {
        queue: Queue,
        auth: Auth,
        batch: bool,
        instances: usize,
    },
    Steady {
        queue: Queue,
    },
    /// An idle PostgreSQL cluster of two: how soon one dispatch at a time is delivered.
    WakeUp {
        url: String,
    },
    Pending {
        queue: Queue,
        batch: bool,
    },
}

fn plan(postgres: Option<&str>) -> Vec<(String, Kind)> {
    let mut queues = vec![Queue::Sqlite, Queue::Memory];
    if let Some(url) = postgres {
        queues.push(Queue::Postgres(url.to_string()));
    }
    let mut rows = Vec::new();
    for batch in [false, true] {
        for queue in &queues {
            let mode = if batch { "batch" } else { "per-message" };
            rows.push((
                format!("{mode}/{}", queue.name()),
                Kind::Throughput { queue: queue.clone(), auth: Auth::None, batch, instances: 1 },
            ));
            if matches!(queue, Queue::Postgres(_)) {
                rows.push((
                    format!("{mode}/postgres/2-instances"),
                    Kind::Throughput { queue: queue.clone(), auth: Auth::None, batch, instances: 2 },
                ));
            }
            if batch && matches!(queue, Queue::Memory) {
                for auth in [Auth::OAuth2, Auth::Jwt, Auth::Basic, Auth::Wasm] {
                    rows.push((
                        format!("batch/memory/{}", auth.name()),
                        Kind::Throughput { queue: Queue::Memory, auth, batch, instances: 1 },
                    ));
                }
            }
        }
    }
    for queue in [Queue::Sqlite, Queue::Memory] {
        rows.push((format!("steady/{}", queue.name()), Kind::Steady { queue }));
    }
    if let Some(url) = postgres {
        rows.push(("wake-up/postgres/2-instances".to_string(), Kind::WakeUp { url: url.to_string() }));
    }
    for batch in [false, true] {
        let mode = if batch { "batch" } else { "per-message" };
        rows.push((format!("pending/{mode}/sqlite"), Kind::Pending { queue: Queue::Sqlite, batch }));
    }
    rows
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// The release `hookgate` binary, built (or found up to date) by cargo.
fn hookgate_binary() -> anyhow::Result<PathBuf> {
    eprintln!("building the release hookgate binary (cargo build --release -p hookgate) ...");
    let status = cargo().args(["build", "--release", "-p", "hookgate"]).status().context("run cargo")?;
    if !status.success() {
        bail!("`cargo build --release -p hookgate` failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from);
    Ok(target.join("release").join("hookgate"))
}

/// The Standard Webhooks example built for `wasm32-wasip2`, in `target/guests` as the tests do.
fn standard_webhooks_wasm() -> anyhow::Result<PathBuf> {
    eprintln!("building examples/standard-webhooks for wasm32-wasip2 ...");
    let target = workspace_root().join("target").join("guests");
    let out = cargo()
        .env("CARGO_TARGET_DIR", &target)
        .args(["build", "--release", "--target", "wasm32-wasip2", "-p", "standard-webhooks"])
        .output()
        .context("run cargo")?;
    if !out.status.success() {
        bail!(
            "building the Standard Webhooks example failed (is the target installed? `rustup target add wasm32-wasip2`):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(target.join("wasm32-wasip2").join("release").join("standard_webhooks.wasm"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Sub::Sink { listen }) = cli.command {
        return sink::serve(listen);
    }
    let args = cli.run;
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: the bench is not optimised (run it with `cargo run --release -p hookgate-bench`): its ceiling is the debug client's"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let n = args.deliveries.unwrap_or(if args.quick { 5_000 } else { 100_000 });
    let pending_n = if args.quick { 10_000 } else { 100_000 };
    let steady_seconds = if args.quick { 2 } else { 10 };
    let plan: Vec<_> = plan(args.postgres.as_deref())
        .into_iter()
        .filter(|(id, _)| args.only.is_empty() || args.only.iter().any(|o| id.starts_with(o.as_str())))
        .collect();
    if plan.is_empty() {
        bail!("--only {} selects no row", args.only.join(" "));
    }
    let hookgate = match args.hookgate {
        Some(p) => p,
        None => hookgate_binary()?,
    };
    if !hookgate.is_file() {
        bail!("no hookgate binary at {}", hookgate.display());
    }
    let wasm = if plan.iter().any(|(_, k)| matches!(k, Kind::Throughput { auth: Auth::Wasm, .. })) {
        Some(standard_webhooks_wasm()?)
    } else {
        None
    };
    let sink = sink::Sink::start()?;
    let run = procfs::now_ns();
    let bench = Bench { sink: &sink, hookgate: &hookgate, concurrency: args.concurrency, wasm: wasm.as_deref(), run };
    eprintln!(
        "sink on {} (pid {}); {} CPUs; {} deliveries a row, {} B a delivery, {} connections/workers",
        sink.addr,
        sink.pid(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        n,
        measure::payload_bytes(),
        args.concurrency
    );
    let mut rows: Vec<Row> = Vec::new();
    let done = |row: Row, rows: &mut Vec<Row>| {
        eprintln!(
            "  {:<34} {:>9.0}/s  p50 {:>8} ms  p99 {:>8} ms  cpu {:>6.1} µs  rss {:>5} MB{}",
            row.id,
            row.per_second,
            row.p50_ms.map_or("—".into(), |v| format!("{v:.2}")),
            row.p99_ms.map_or("—".into(), |v| format!("{v:.2}")),
            row.cpu_us_per_delivery,
            row.peak_rss_mb.map_or("—".into(), |v| format!("{v:.0}")),
            row.postgres.map_or(String::new(), |pg| format!(
                "  db: {:.3} transactions, {:.0} B WAL, {:.2} rows{} per delivery",
                pg.transactions,
                pg.wal_bytes,
                pg.rows_written,
                pg.cpu_us.map_or(String::new(), |us| format!(", {us:.0} µs CPU"))
            ))
        );
        rows.push(row);
    };
    done(bench.ceiling("ceiling", n).await?, &mut rows);
    for (id, kind) in &plan {
        let row = match kind {
            // PostgreSQL delivers an order of magnitude slower: a fifth of the deliveries keeps
            // the run short and the rate as stable.
            Kind::Throughput { queue: queue @ Queue::Postgres(_), auth, batch, instances } => {
                bench.throughput(id, queue, *auth, *batch, *instances, (n / 5).max(1)).await
            }
            Kind::Throughput { queue, auth, batch, instances } => {
                bench.throughput(id, queue, *auth, *batch, *instances, n).await
            }
            Kind::Steady { queue } => bench.steady(id, queue, 1000, steady_seconds).await,
            Kind::WakeUp { url } => bench.wake_up(id, url, 20).await,
            Kind::Pending { queue, batch } => bench.pending(id, queue, *batch, pending_n).await,
        };
        done(row.with_context(|| format!("row {id}"))?, &mut rows);
    }
    done(bench.ceiling("ceiling (end)", n).await?, &mut rows);
    let ceiling = rows.iter().filter(|r| r.id.starts_with("ceiling")).map(|r| r.per_second).fold(0.0, f64::max);
    for r in &mut rows {
        if !r.id.starts_with("pending") {
            r.ratio = Some(r.per_second / ceiling);
        }
    }
    let targets = report::targets(&rows);
    if args.json {
        let doc = serde_json::json!({
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "concurrency": args.concurrency,
            "deliveries_per_row": n,
            "payload_bytes": measure::payload_bytes(),
            "quick": args.quick,
            "ceiling_per_second": ceiling,
            "rows": rows,
            "targets": targets,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("{}", report::table(&rows, &targets));
        if args.quick {
            println!(
                "(--quick: a smoke run; the figures are not stable and the pending rows hold {pending_n}, not 100,000)"
            );
        }
    }
    Ok(())
}
