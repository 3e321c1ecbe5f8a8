//! The rows: what each one sends, and what it measures.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::gateway::{Auth, Gateway, Queue, Spec, template};
use crate::pgstats::{PgCost, PgStats};
use crate::procfs::{cpu_us, now_ns, vm_bytes};
use crate::raw::{self, Conn};
use crate::sink::{DELIVERY_ID, Sink};

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `ceiling`, `per-message/sqlite`, `batch/memory/oauth2`, `pending/batch/sqlite`, ...
    pub id: String,
    pub deliveries: u64,
    /// From the first byte sent to the last delivery's arrival at the sink.
    pub seconds: f64,
    pub per_second: f64,
    /// `per_second` over the ceiling's (the higher of the run's two ceiling rows).
    pub ratio: Option<f64>,
    /// Dispatch request sent (it is answered 202 once accepted) → arrival at the sink; the
    /// ceiling: request sent → arrival.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The gateway's CPU (user + system) over the row, per delivery; the ceiling: the client's.
    pub cpu_us_per_delivery: f64,
    /// Cores the gateway (the ceiling: the client) kept busy on average over the row.
    pub cores: f64,
    pub sink_cpu_us_per_delivery: f64,
    /// The gateway's peak resident set (VmHWM) over its life; the row has a fresh gateway.
    pub peak_rss_mb: Option<f64>,
    /// Pending rows: the gateway's resident set (VmRSS) with every delivery accepted and pending.
    pub pending_rss_mb: Option<f64>,
    /// Delivery ids the sink saw more than once (0 unless something went wrong).
    pub duplicates: u64,
    /// OAuth rows: token requests the sink answered over the row.
    pub token_requests: Option<u64>,
    /// PostgreSQL rows: what the row cost the database, per delivery.
    pub postgres: Option<PgCost>,
}

/// CPU microseconds (user + system) of the measured process and of the sink, read before
/// and after a row.
#[derive(Clone, Copy)]
struct Cpu {
    process: f64,
    sink: f64,
}

impl Row {
    /// A row of `n` deliveries that the sink `seen` from `start` (ns) on, with the CPU the
    /// measured process and the sink used between `before` and `after`; the optional
    /// figures are left for the caller.
    fn measured(id: &str, n: u64, start: u64, seen: &Seen, before: Cpu, after: Cpu) -> Self {
        let seconds = (seen.last_arrival - start) as f64 / 1e9;
        let cpu = after.process - before.process;
        Self {
            id: id.into(),
            deliveries: n,
            seconds,
            per_second: n as f64 / seconds,
            ratio: None,
            p50_ms: Some(seen.p50_ms),
            p99_ms: Some(seen.p99_ms),
            cpu_us_per_delivery: cpu / n as f64,
            cores: cpu / 1e6 / seconds,
            sink_cpu_us_per_delivery: (after.sink - before.sink) / n as f64,
            peak_rss_mb: None,
            pending_rss_mb: None,
            duplicates: seen.duplicates,
            token_requests: None,
            postgres: None,
        }
    }
}

/// What every row shares.
pub struct Bench<'a> {
    pub sink: &'a Sink,
    pub hookgate: &'a Path,
    pub concurrency: usize,
    pub wasm: Option<&'a Path>,
    /// Makes campaign ids unique to this run (a PostgreSQL database may hold earlier runs).
    pub run: u64,
}

// ---------------------------------------------------------------- payloads

/// One profile of a marketing platform's audience, ~1 KB with its message: the fields a
/// campaign sends (identity, contact, locale, purchases, tags, consents, device), varied per
/// profile so that what a store compresses is like real data, not a run of one byte.
fn profile(i: u64) -> String {
    const FIRST: [&str; 16] = [
        "Ann", "Bob", "Chloé", "Dmitri", "Emma", "Farid", "Grace", "Hugo", "Inès", "Jun", "Kofi", "Lena", "Mateo",
        "Nora", "Oskar", "Priya",
    ];
    const LAST: [&str; 12] = [
        "Martin",
        "Bernard",
        "Dubois",
        "Nakamura",
        "Okafor",
        "Schmidt",
        "García",
        "Rossi",
        "Kowalski",
        "Nguyen",
        "Silva",
        "Johansson",
    ];
    const PLACES: [(&str, &str, &str, &str); 7] = [
        ("Paris", "FR", "Europe/Paris", "fr-FR"),
        ("Lyon", "FR", "Europe/Paris", "fr-FR"),
        ("Berlin", "DE", "Europe/Berlin", "de-DE"),
        ("Madrid", "ES", "Europe/Madrid", "es-ES"),
        ("Tokyo", "JP", "Asia/Tokyo", "ja-JP"),
        ("Lagos", "NG", "Africa/Lagos", "en-NG"),
        ("Austin", "US", "America/Chicago", "en-US"),
    ];
    const TAGS: [&str; 10] = [
        "vip",
        "newsletter",
        "churn-risk",
        "mobile",
        "web",
        "black-friday",
        "loyalty",
        "beta",
        "app-user",
        "sms-optin",
    ];
    const TIERS: [&str; 4] = ["bronze", "silver", "gold", "platinum"];
    const WORDS: [&str; 24] = [
        "running",
        "shoes",
        "trail",
        "summer",
        "sale",
        "jacket",
        "waterproof",
        "kids",
        "outdoor",
        "camping",
        "yoga",
        "cycling",
        "helmet",
        "gift",
        "card",
        "winter",
        "boots",
        "size",
        "blue",
        "wishlist",
        "returns",
        "premium",
        "delivery",
        "store",
    ];
    let mut r = Splitmix(i);
    let (first, last) = (FIRST[r.pick(FIRST.len())], LAST[r.pick(LAST.len())]);
    let (city, country, zone, language) = PLACES[r.pick(PLACES.len())];
    let tags: Vec<String> = (0..3).map(|_| format!("\"{}\"", TAGS[r.pick(TAGS.len())])).collect();
    let email = format!("{}.{}{}@example.com", first.to_lowercase(), last.to_lowercase(), r.pick(1000));
    let phone = 600_000_000 + r.pick(200_000_000);
    let signup = format!(
        "20{:02}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        15 + r.pick(12),
        1 + r.pick(12),
        1 + r.pick(28),
        r.pick(24),
        r.pick(60),
        r.pick(60)
    );
    let (order, amount, cents, items) = (r.next(), 5 + r.pick(495), r.pick(100), 1 + r.pick(9));
    let (ltv, ltc, orders, tier) = (10 + r.pick(9000), r.pick(100), 1 + r.pick(120), TIERS[r.pick(TIERS.len())]);
    let (sms, push) = (r.pick(2) == 1, r.pick(2) == 1);
    let (device, score, seen) =
        ((u128::from(r.next()) << 64) | u128::from(r.next()), r.pick(10_000), r.next() % 1_000_000_000);
    let tags = tags.join(",");
    let mut p = format!(
        r#"{{"Identity":"user-{i}","Email":"{email}","FirstName":"{first}","LastName":"{last}","Phone":"+33{phone}","City":"{city}","Country":"{country}","TimeZone":"{zone}","Language":"{language}","SignupDate":"{signup}","LastPurchase":{{"OrderId":"{order:016x}","Amount":{amount}.{cents:02},"Currency":"EUR","Items":{items}}},"LifetimeValue":{ltv}.{ltc:02},"Orders":{orders},"LoyaltyTier":"{tier}","Tags":[{tags}],"Consent":{{"Email":true,"Sms":{sms},"Push":{push}}},"DeviceId":"{device:032x}","Score":0.{score:04},"LastSeen":{seen},"Interests":""#,
        seen = 1_764_547_200_000u64 + seen,
    );
    // Interests, a few words at a time, to the same length for every profile.
    const LEN: usize = 860;
    while p.len() < LEN {
        let word = WORDS[r.pick(WORDS.len())];
        if !p.ends_with('"') {
            p.push(' ');
        }
        p.push_str(word);
    }
    let mut end = LEN.min(p.len());
    while !p.is_char_boundary(end) {
        end -= 1;
    }
    p.truncate(end);
    p.push_str("\"}");
    p
}

/// splitmix64: a repeatable stream of numbers, its own for each seed.
struct Splitmix(u64);

impl Splitmix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n`.
    fn pick(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn message(target: &str, profiles: &str) -> String {
    format!(r#"{{"is_test":false,"targetId":"{target}","key_values":{{"campaign":"bench"}},"profiles":[{profiles}]}}"#)
}

/// The size in bytes of one delivery's body (what the ceiling sends, and what the gateway
/// sends for one profile).
pub fn payload_bytes() -> usize {
    message("bench-0000000000-00", &profile(0)).len()
}

fn dispatch_request(body: &[u8]) -> Vec<u8> {
    raw::request(
        "POST",
        &format!("/v1/templates/{}/dispatch", template()),
        &[("content-type", "application/json")],
        body,
    )
}

#[derive(serde::Deserialize)]
struct Accepted {
    dispatch_id: String,
}

/// Sends one dispatch; returns its id and when it was sent. Latency counts from the send,
/// not from reading the 202: at light load the delivery often reaches the sink before the
/// client has read the 202, so "sent" is the honest start (it includes the API call).
async fn dispatch(conn: &mut Conn, request: &[u8]) -> anyhow::Result<(String, u64)> {
    let at = now_ns();
    let answer = conn.send(request).await?;
    if answer.status != 202 {
        bail!("dispatch answered {}: {}", answer.status, String::from_utf8_lossy(&answer.body));
    }
    let accepted: Accepted = serde_json::from_slice(&answer.body).context("the dispatch's answer")?;
    Ok((accepted.dispatch_id, at))
}

/// `n` dispatches of one profile each from `concurrency` connections, as fast as they are
/// accepted; returns (dispatch id, sent ns) of each.
async fn per_message(
    gateway: &Gateway,
    target: &str,
    n: u64,
    concurrency: usize,
) -> anyhow::Result<Vec<(String, u64)>> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (next, addr, target) = (next.clone(), gateway.addr, target.to_string());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(addr).await?;
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(out);
                }
                let request = dispatch_request(message(&target, &profile(i)).as_bytes());
                out.push(dispatch(&mut conn, &request).await?);
            }
        }));
    }
    let mut all = Vec::with_capacity(n as usize);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

fn batch_body(target: &str, n: u64) -> Vec<u8> {
    let mut profiles = String::with_capacity(n as usize * 1000);
    for i in 0..n {
        if i > 0 {
            profiles.push(',');
        }
        profiles.push_str(&profile(i));
    }
    dispatch_request(message(target, &profiles).as_bytes())
}

// ---------------------------------------------------------------- what the sink saw

/// When each delivery id's dispatch (or, for the ceiling, its request) was sent.
enum Expected {
    /// Per-message: each dispatch id and when it was sent; delivery ids are `<id>.0`.
    Each(HashMap<String, u64>),
    /// Batch: one dispatch of `n` requests, `<id>.0` to `<id>.<n-1>`.
    One { id: String, n: u64, at: u64 },
}

struct Seen {
    duplicates: u64,
    last_arrival: u64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Checks that the sink saw every expected delivery id exactly once and computes the latencies.
fn check(records: &[(String, u64)], expected: &Expected) -> anyhow::Result<Seen> {
    let mut seen: HashMap<&str, u32> = HashMap::with_capacity(records.len());
    let mut latencies = Vec::with_capacity(records.len());
    let mut last_arrival = 0;
    let mut unexpected = 0;
    for (id, at) in records {
        let count = seen.entry(id.as_str()).or_default();
        *count += 1;
        if *count > 1 {
            continue;
        }
        last_arrival = last_arrival.max(*at);
        let (dispatch, index) = id.rsplit_once('.').unwrap_or((id, ""));
        let accepted = match expected {
            Expected::Each(map) => map.get(dispatch).copied().filter(|_| index == "0"),
            Expected::One { id, n, at } => {
                (dispatch == id && index.parse::<u64>().is_ok_and(|i| i < *n)).then_some(*at)
            }
        };
        match accepted {
            Some(accepted) => latencies.push(at.saturating_sub(accepted)),
            None => unexpected += 1,
        }
    }
    let want = match expected {
        Expected::Each(map) => map.len() as u64,
        Expected::One { n, .. } => *n,
    };
    if unexpected > 0 || latencies.len() as u64 != want {
        bail!("the sink saw {} of the {want} expected delivery ids, and {unexpected} unexpected ones", latencies.len());
    }
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize] as f64 / 1e6;
    Ok(Seen {
        duplicates: seen.values().filter(|c| **c > 1).map(|c| u64::from(*c - 1)).sum(),
        last_arrival,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

// ---------------------------------------------------------------- the rows

impl Bench<'_> {
    /// The CPU used so far by `pid` and by the sink.
    fn cpu(&self, pid: u32) -> anyhow::Result<Cpu> {
        Ok(Cpu { process: cpu_us(pid)?, sink: cpu_us(self.sink.pid())? })
    }

    /// Sends `n` deliveries to `target` through the gateway: one dispatch of `n` profiles
    /// when `batch` is given (its body, built before the clock started), else `n` dispatches
    /// of one profile from `concurrency` connections.
    async fn send(&self, gateway: &Gateway, target: &str, batch: Option<Vec<u8>>, n: u64) -> anyhow::Result<Expected> {
        Ok(match batch {
            Some(request) => {
                let mut conn = Conn::connect(gateway.addr).await?;
                let (id, at) = dispatch(&mut conn, &request).await?;
                Expected::One { id, n, at }
            }
            None => Expected::Each(per_message(gateway, target, n, self.concurrency).await?.into_iter().collect()),
        })
    }

    fn target(&self, row: &str) -> String {
        format!("bench-{}-{}", self.run, row.replace('/', "-"))
    }

    /// A bare HTTP client → the sink: the same body, connections and headers, no gateway.
    pub async fn ceiling(&self, id: &str, n: u64) -> anyhow::Result<Row> {
        self.sink.take().await?;
        let prefix = self.target(id);
        let body = message(&prefix, &profile(0));
        let before = self.cpu(std::process::id())?;
        let start = now_ns();
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..self.concurrency {
            let (next, addr, prefix, body) = (next.clone(), self.sink.addr, prefix.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::connect(addr).await?;
                let mut sent = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return anyhow::Ok(sent);
                    }
                    let delivery = format!("{prefix}-{i}.0");
                    let request = raw::request(
                        "POST",
                        "/hook",
                        &[("content-type", "application/json"), (DELIVERY_ID, &delivery)],
                        body.as_bytes(),
                    );
                    let at = now_ns();
                    let answer = conn.send(&request).await?;
                    if answer.status != 200 {
                        bail!("the sink answered {}", answer.status);
                    }
                    sent.push((format!("{prefix}-{i}"), at));
                }
            }));
        }
        let mut sent = HashMap::with_capacity(n as usize);
        for t in tasks {
            sent.extend(t.await??);
        }
        let after = self.cpu(std::process::id())?;
        let seen = check(&self.sink.take().await?, &Expected::Each(sent))?;
        Ok(Row::measured(id, n, start, &seen, before, after))
    }

    fn spec<'s>(&'s self, queue: &'s Queue, auth: Auth, timeout: &'s str) -> Spec<'s> {
        Spec { queue, auth, concurrency: self.concurrency, timeout, wasm: self.wasm }
    }

    /// hookgate end to end, as fast as it goes: `n` dispatches of one profile (`batch:
    /// false`, from `concurrency` connections, spread over the instances) or one dispatch of
    /// `n` profiles with `batch_size: 1` (to the first instance). Several instances share a
    /// PostgreSQL queue; its cost to the database is measured too.
    pub async fn throughput(
        &self,
        id: &str,
        queue: &Queue,
        auth: Auth,
        batch: bool,
        instances: usize,
        n: u64,
    ) -> anyhow::Result<Row> {
        self.sink.take().await?;
        let mut gateways = Vec::new();
        for _ in 0..instances.max(1) {
            gateways.push(Gateway::start(self.hookgate, &self.spec(queue, auth, "5s"), self.sink.addr).await?);
        }
        let mut pg = match queue {
            Queue::Postgres(url) => Some(PgStats::connect(url).await?),
            _ => None,
        };
        let target = self.target(id);
        let big = batch.then(|| batch_body(&target, n));
        let cpu = |gateways: &[Gateway]| -> anyhow::Result<Cpu> {
            let mut total = Cpu { process: 0.0, sink: cpu_us(self.sink.pid())? };
            for g in gateways {
                total.process += cpu_us(g.pid())?;
            }
            Ok(total)
        };
        // Most of the instances' start-up statements are reported by then (a connection's
        // second report within a second is put off by ten: a few may count in the row).
        let pg_before = match &mut pg {
            Some(pg) => {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Some(pg.read_settled(Duration::from_secs(5)).await?)
            }
            None => None,
        };
        let before = cpu(&gateways)?;
        let start = now_ns();
        let expected = match big {
            Some(request) => self.send(&gateways[0], &target, Some(request), n).await?,
            None => {
                let share = n.div_ceil(gateways.len() as u64);
                let connections = self.concurrency / gateways.len();
                let sends = gateways.iter().enumerate().map(|(i, g)| {
                    let count = share.min(n.saturating_sub(share * i as u64));
                    let part = format!("{target}-{i}");
                    async move { per_message(g, &part, count, connections.max(1)).await }
                });
                let mut all = HashMap::new();
                for part in futures_join(sends).await {
                    all.extend(part?);
                }
                Expected::Each(all)
            }
        };
        let deadline = Duration::from_secs(60 + n / 500);
        self.sink.wait(&format!("{n} deliveries"), deadline, |c| c.records >= n).await?;
        let after = cpu(&gateways)?;
        if let Some(pg) = &mut pg {
            let campaigns: Vec<String> = if batch {
                vec![target.clone()]
            } else {
                (0..gateways.len()).map(|i| format!("{target}-{i}")).collect()
            };
            for c in &campaigns {
                pg.wait_settled(c, deadline).await?;
            }
        }
        if batch || gateways.len() == 1 {
            let campaign = if batch { target.clone() } else { format!("{target}-0") };
            gateways[0].wait_delivered(&campaign, n, deadline).await?;
        }
        let mut peak = 0;
        for g in &gateways {
            peak = peak.max(vm_bytes(g.pid(), "VmHWM")?);
        }
        // The database's counts are complete once the gateways' connections have closed.
        drop(gateways);
        let cost = match (&mut pg, pg_before) {
            (Some(pg), Some(pg_before)) => {
                Some(PgCost::between(pg_before, pg.read_settled(Duration::from_secs(15)).await?, n))
            }
            _ => None,
        };
        let counts = self.sink.counts().await?;
        if auth != Auth::None && counts.authed < n {
            bail!("{id}: only {} of {n} deliveries carried credentials", counts.authed);
        }
        let seen = check(&self.sink.take().await?, &expected)?;
        Ok(Row {
            peak_rss_mb: Some(peak as f64 / 1e6),
            token_requests: matches!(auth, Auth::OAuth2 | Auth::Jwt).then_some(counts.tokens),
            postgres: cost,
            ..Row::measured(id, n, start, &seen, before, after)
        })
    }

    /// An idle cluster of two PostgreSQL instances: `n` single dispatches, one at a time,
    /// each sent once the previous one arrived (every one finds both instances idle),
    /// alternately through either; latency is dispatch → arrival.
    pub async fn wake_up(&self, id: &str, url: &str, n: u64) -> anyhow::Result<Row> {
        self.sink.take().await?;
        let queue = Queue::Postgres(url.to_string());
        let a = Gateway::start(self.hookgate, &self.spec(&queue, Auth::None, "5s"), self.sink.addr).await?;
        let b = Gateway::start(self.hookgate, &self.spec(&queue, Auth::None, "5s"), self.sink.addr).await?;
        let target = self.target(id);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = Cpu { process: cpu_us(a.pid())? + cpu_us(b.pid())?, sink: cpu_us(self.sink.pid())? };
        let start = now_ns();
        let mut sent = HashMap::new();
        for i in 0..n {
            let gateway = if i % 2 == 0 { &a } else { &b };
            let mut conn = Conn::connect(gateway.addr).await?;
            let request = dispatch_request(message(&target, &profile(i)).as_bytes());
            let (dispatch_id, at) = dispatch(&mut conn, &request).await?;
            sent.insert(dispatch_id, at);
            self.sink.wait(&format!("delivery {i}"), Duration::from_secs(10), |c| c.records > i).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let after = Cpu { process: cpu_us(a.pid())? + cpu_us(b.pid())?, sink: cpu_us(self.sink.pid())? };
        let seen = check(&self.sink.take().await?, &Expected::Each(sent))?;
        Ok(Row::measured(id, n, start, &seen, before, after))
    }

    /// A light steady load: `rate` dispatches of one profile a second for `seconds`, each
    /// sent on schedule (from 16 connections), so latency is not queueing behind a backlog.
    pub async fn steady(&self, id: &str, queue: &Queue, rate: u64, seconds: u64) -> anyhow::Result<Row> {
        let gateway = Gateway::start(self.hookgate, &self.spec(queue, Auth::None, "5s"), self.sink.addr).await?;
        let target = self.target(id);
        let n = rate * seconds;
        self.sink.take().await?;
        let before = self.cpu(gateway.pid())?;
        let start = now_ns();
        let origin = tokio::time::Instant::now();
        const LANES: u64 = 16;
        let mut tasks = Vec::new();
        for lane in 0..LANES {
            let (addr, target) = (gateway.addr, target.clone());
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::connect(addr).await?;
                let mut out = Vec::new();
                for i in (lane..n).step_by(LANES as usize) {
                    tokio::time::sleep_until(origin + Duration::from_nanos(i * 1_000_000_000 / rate)).await;
                    let request = dispatch_request(message(&target, &profile(i)).as_bytes());
                    out.push(dispatch(&mut conn, &request).await?);
                }
                anyhow::Ok(out)
            }));
        }
        let mut accepted = HashMap::with_capacity(n as usize);
        for t in tasks {
            accepted.extend(t.await??);
        }
        let deadline = Duration::from_secs(60);
        self.sink.wait(&format!("{n} deliveries"), deadline, |c| c.records >= n).await?;
        gateway.wait_delivered(&target, n, deadline).await?;
        let after = self.cpu(gateway.pid())?;
        let peak = vm_bytes(gateway.pid(), "VmHWM")?;
        let seen = check(&self.sink.take().await?, &Expected::Each(accepted))?;
        Ok(Row { peak_rss_mb: Some(peak as f64 / 1e6), ..Row::measured(id, n, start, &seen, before, after) })
    }

    /// `n` deliveries pending at once: the sink holds its answers (a destination that stops
    /// answering), so `concurrency` requests wait in flight and the rest in the queue, while
    /// `n` are dispatched (per message, or as one batch). The gateway's resident set is read
    /// once every dispatch is accepted and every worker waits on the sink; then the sink
    /// answers and every delivery must arrive exactly once. Its rate is the drain's, from
    /// the release (not comparable with the throughput rows).
    pub async fn pending(&self, id: &str, queue: &Queue, batch: bool, n: u64) -> anyhow::Result<Row> {
        let gateway = Gateway::start(self.hookgate, &self.spec(queue, Auth::None, "5m"), self.sink.addr).await?;
        let target = self.target(id);
        let big = batch.then(|| batch_body(&target, n));
        self.sink.take().await?;
        self.sink.hold().await?;
        let expected = self.send(&gateway, &target, big, n).await?;
        let in_flight = (self.concurrency as u64).min(n);
        self.sink.wait("every worker to wait on the sink", Duration::from_secs(60), |c| c.held >= in_flight).await?;
        let rss = vm_bytes(gateway.pid(), "VmRSS")?;
        let before = self.cpu(gateway.pid())?;
        let start = now_ns();
        self.sink.release().await?;
        let deadline = Duration::from_secs(60 + n / 500);
        self.sink.wait(&format!("{n} deliveries"), deadline, |c| c.records >= n).await?;
        gateway.wait_delivered(&target, n, deadline).await?;
        let after = self.cpu(gateway.pid())?;
        let peak = vm_bytes(gateway.pid(), "VmHWM")?;
        let seen = check(&self.sink.take().await?, &expected)?;
        Ok(Row {
            p50_ms: None,
            p99_ms: None,
            peak_rss_mb: Some(peak as f64 / 1e6),
            pending_rss_mb: Some(rss as f64 / 1e6),
            ..Row::measured(id, n, start, &seen, before, after)
        })
    }
}

/// Runs the futures concurrently and returns their outputs in order.
async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut handles: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..handles.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (h, o) in handles.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match h.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().map(|o| o.expect("ready")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_json_of_one_size_and_differ() {
        let messages: Vec<String> = (0..200).map(|i| message("bench-0000000000-00", &profile(i))).collect();
        for m in &messages {
            let value: serde_json::Value = serde_json::from_str(m).expect("a message is JSON");
            assert_eq!(value["profiles"].as_array().map(Vec::len), Some(1));
            assert!((900..=1100).contains(&m.len()), "{} bytes: {m}", m.len());
        }
        let distinct: std::collections::HashSet<_> = messages.iter().collect();
        assert_eq!(distinct.len(), messages.len(), "every profile is its own");
        assert_eq!(profile(7), profile(7), "a profile is the same in every run");
    }
}
