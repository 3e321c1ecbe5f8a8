//! Delivery stats per campaign (`targetId`) and per template: requests and profiles
//! delivered, failed and pending; final errors grouped by reason; attempt latency.
//! Every update is a short critical section; nothing here waits on the network.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::model::{AttemptResult, DISPATCH_FAILED, RequestStatus, StoredDispatch, StoredRequest};
use crate::payload::CampaignId;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, f64::INFINITY];

/// Requests (or profiles) by outcome.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Counts {
    pub delivered: u64,
    pub failed: u64,
    pub pending: u64,
}

/// Counters that only grow, for `/metrics` (Prometheus reads a decrease as a reset): a
/// replay makes a failed request pending again, so [`Counts::failed`] goes down while
/// `failed` here keeps the failure and `replayed` counts the replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub delivered: u64,
    pub failed: u64,
    pub replayed: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    max: f64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS.iter().position(|b| s <= *b).unwrap_or(BUCKETS.len() - 1);
        self.counts[i] += 1;
        self.sum += s;
        self.max = self.max.max(s);
    }

    /// Takes an observation out again (the maximum stays: it is the largest ever seen).
    fn unobserve(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS.iter().position(|b| s <= *b).unwrap_or(BUCKETS.len() - 1);
        self.counts[i] = self.counts[i].saturating_sub(1);
        self.sum = (self.sum - s).max(0.0);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper bound of the bucket holding quantile `q` (capped at the largest value seen).
    pub fn quantile(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return BUCKETS[i].min(self.max);
            }
        }
        self.max
    }
}

/// Stats of one campaign, one template, or one campaign through one template.
#[derive(Debug, Clone, Default)]
pub struct DeliveryStats {
    pub requests: Counts,
    pub profiles: Counts,
    /// Profiles a transform plugin left out on purpose.
    pub skipped_profiles: u64,
    /// Final failures by last reason.
    pub errors: BTreeMap<String, u64>,
    pub attempts: BTreeMap<AttemptResult, u64>,
    pub latency: Histogram,
    /// Requests and profiles finished and replayed, ever: what `/metrics` exports.
    pub request_totals: Totals,
    pub profile_totals: Totals,
    /// The dispatches counted here and not yet pruned.
    dispatches: u64,
}

impl DeliveryStats {
    /// Takes out what a pruned dispatch counted for (all but the latency maximum).
    fn forget(&mut self, skipped: u64, requests: &[StoredRequest]) {
        self.dispatches = self.dispatches.saturating_sub(1);
        self.skipped_profiles = self.skipped_profiles.saturating_sub(skipped);
        for r in requests {
            let profiles = r.profiles as u64;
            let (requests, profile_counts) = (&mut self.requests, &mut self.profiles);
            let (counter, profile_counter) = match &r.status {
                RequestStatus::Pending => (&mut requests.pending, &mut profile_counts.pending),
                RequestStatus::Delivered => (&mut requests.delivered, &mut profile_counts.delivered),
                RequestStatus::Failed { reason } => {
                    if let Some(count) = self.errors.get_mut(reason) {
                        *count = count.saturating_sub(1);
                        if *count == 0 {
                            self.errors.remove(reason);
                        }
                    }
                    (&mut requests.failed, &mut profile_counts.failed)
                }
            };
            *counter = counter.saturating_sub(1);
            *profile_counter = profile_counter.saturating_sub(profiles);
            for a in &r.attempts {
                if let Some(count) = self.attempts.get_mut(&a.result) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        self.attempts.remove(&a.result);
                    }
                }
                self.latency.unobserve(a.latency);
            }
        }
    }

    fn accepted(&mut self, requests: u64, profiles: u64) {
        self.dispatches += 1;
        self.requests.pending += requests;
        self.profiles.pending += profiles;
    }

    fn attempt(&mut self, latency: Duration, result: AttemptResult) {
        self.latency.observe(latency);
        *self.attempts.entry(result).or_default() += 1;
    }

    fn delivered(&mut self, profiles: u64) {
        self.requests.pending = self.requests.pending.saturating_sub(1);
        self.profiles.pending = self.profiles.pending.saturating_sub(profiles);
        self.requests.delivered += 1;
        self.profiles.delivered += profiles;
        self.request_totals.delivered += 1;
        self.profile_totals.delivered += profiles;
    }

    fn failed(&mut self, profiles: u64, reason: &str) {
        self.requests.pending = self.requests.pending.saturating_sub(1);
        self.profiles.pending = self.profiles.pending.saturating_sub(profiles);
        self.requests.failed += 1;
        self.profiles.failed += profiles;
        self.request_totals.failed += 1;
        self.profile_totals.failed += profiles;
        *self.errors.entry(reason.to_string()).or_default() += 1;
    }

    fn requeued(&mut self, profiles: u64, reason: &str) {
        self.requests.failed = self.requests.failed.saturating_sub(1);
        self.profiles.failed = self.profiles.failed.saturating_sub(profiles);
        self.requests.pending += 1;
        self.profiles.pending += profiles;
        self.request_totals.replayed += 1;
        self.profile_totals.replayed += profiles;
        if let Some(count) = self.errors.get_mut(reason) {
            *count -= 1;
            if *count == 0 {
                self.errors.remove(reason);
            }
        }
    }

    fn skipped(&mut self, profiles: u64) {
        self.skipped_profiles += profiles;
    }

    pub fn view(&self) -> StatsView {
        let mut errors: Vec<ErrorView> = self
            .errors
            .iter()
            .map(|(reason, count)| ErrorView { error: DISPATCH_FAILED, reason: reason.clone(), count: *count })
            .collect();
        errors.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
        let ms = |s: f64| (s * 1e6).round() / 1e3;
        let n = self.latency.count();
        StatsView {
            requests: self.requests,
            profiles: self.profiles,
            skipped_profiles: self.skipped_profiles,
            errors,
            attempts: self.attempts.iter().map(|(k, v)| (k.label(), *v)).collect(),
            latency_ms: LatencyView {
                count: n,
                mean: if n == 0 { 0.0 } else { ms(self.latency.sum / n as f64) },
                p50: ms(self.latency.quantile(0.5)),
                p99: ms(self.latency.quantile(0.99)),
                max: ms(self.latency.max),
            },
        }
    }
}

/// Delivery stats: requests and profiles by outcome, errors grouped by reason, attempts by
/// result and their latency.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatsView {
    pub requests: Counts,
    pub profiles: Counts,
    pub skipped_profiles: u64,
    pub errors: Vec<ErrorView>,
    /// Attempts by result (`success`, `retry`, `failure`, ...).
    #[schema(value_type = BTreeMap<String, u64>)]
    pub attempts: BTreeMap<&'static str, u64>,
    pub latency_ms: LatencyView,
}

/// Failed requests with one reason.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorView {
    /// `Webhook Dispatch Failed`.
    #[schema(value_type = String)]
    pub error: &'static str,
    /// The last reason of the requests counted here (`HTTP 503 Service Unavailable`, `timeout: ...`).
    pub reason: String,
    /// Failed requests with this reason.
    pub count: u64,
}

/// Attempt latency; `p50` and `p99` are the upper bounds of histogram buckets.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LatencyView {
    /// Attempts measured.
    pub count: u64,
    /// Milliseconds.
    pub mean: f64,
    /// Milliseconds (a bucket bound).
    pub p50: f64,
    /// Milliseconds (a bucket bound).
    pub p99: f64,
    /// Milliseconds.
    pub max: f64,
}

/// A campaign's stats (its `targetId`), in all and per template.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CampaignView {
    pub target_id: String,
    #[serde(flatten)]
    pub total: StatsView,
    pub templates: BTreeMap<String, StatsView>,
}

/// The counters under `key`, made on first use.
fn counters<'m>(map: &'m mut BTreeMap<String, DeliveryStats>, key: &str) -> &'m mut DeliveryStats {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), DeliveryStats::default());
    }
    map.get_mut(key).expect("inserted above")
}

#[derive(Default)]
struct Inner {
    campaigns: HashMap<CampaignId, (DeliveryStats, BTreeMap<String, DeliveryStats>)>,
    templates: BTreeMap<String, DeliveryStats>,
}

/// The stats, per campaign (while the campaign has dispatches that are not pruned) and per
/// template (counters since start, for `/metrics`).
pub struct Stats {
    inner: Mutex<Inner>,
    /// Whether campaigns are counted here; with a shared store they are derived from its rows.
    campaigns: bool,
}

impl Default for Stats {
    fn default() -> Self {
        Self { inner: Mutex::default(), campaigns: true }
    }
}

impl Stats {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stats of templates only: a shared store's rows answer for campaigns, so memory keeps
    /// none.
    pub fn templates_only() -> Self {
        Self { inner: Mutex::default(), campaigns: false }
    }

    fn update(&self, campaign: &str, template: &str, f: impl Fn(&mut DeliveryStats)) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if self.campaigns {
            // Keys are copied only the first time (a lookup by `&str` otherwise): this runs
            // twice for every delivery.
            if !inner.campaigns.contains_key(campaign) {
                inner.campaigns.insert(campaign.to_owned(), Default::default());
            }
            let (total, by_template) = inner.campaigns.get_mut(campaign).expect("inserted above");
            f(total);
            f(counters(by_template, template));
        }
        f(counters(&mut inner.templates, template));
    }

    /// A dispatch was pruned (past the retention period, or dropped from memory when there
    /// is no store): what it counted for leaves its campaign's stats, and a campaign with no
    /// dispatch left is dropped. The per-template counters (`/metrics`) keep counting.
    pub fn forget(&self, d: &StoredDispatch) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some((total, by_template)) = inner.campaigns.get_mut(&d.campaign) else { return };
        total.forget(d.skipped as u64, &d.requests);
        if total.dispatches == 0 {
            inner.campaigns.remove(&d.campaign);
            return;
        }
        if let Some(t) = by_template.get_mut(&d.template) {
            t.forget(d.skipped as u64, &d.requests);
            if t.dispatches == 0 {
                by_template.remove(&d.template);
            }
        }
    }

    /// How many campaigns are counted in memory.
    pub fn campaign_count(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).campaigns.len()
    }

    pub fn accepted(&self, campaign: &str, template: &str, requests: u64, profiles: u64) {
        self.update(campaign, template, |s| s.accepted(requests, profiles));
    }

    /// A failed request is being sent again: it counts as pending, not failed.
    pub fn requeued(&self, campaign: &str, template: &str, profiles: u64, reason: &str) {
        self.update(campaign, template, |s| s.requeued(profiles, reason));
    }

    pub fn skipped(&self, campaign: &str, template: &str, profiles: u64) {
        self.update(campaign, template, |s| s.skipped(profiles));
    }

    pub fn attempt(&self, campaign: &str, template: &str, latency: Duration, result: AttemptResult) {
        self.update(campaign, template, |s| s.attempt(latency, result));
    }

    pub fn delivered(&self, campaign: &str, template: &str, profiles: u64) {
        self.update(campaign, template, |s| s.delivered(profiles));
    }

    pub fn failed(&self, campaign: &str, template: &str, profiles: u64, reason: &str) {
        self.update(campaign, template, |s| s.failed(profiles, reason));
    }

    /// Counts a stored dispatch as if it had happened here: its acceptance, its attempts and
    /// its requests' outcomes. Stats are derived from the dispatch records this way after a
    /// restart, and from a shared store's rows on every read.
    pub fn replay(&self, d: &StoredDispatch) {
        let requests = d.requests.len() as u64;
        let profiles = d.requests.iter().map(|r| r.profiles as u64).sum();
        self.update(&d.campaign, &d.template, |s| {
            s.accepted(requests, profiles);
            s.skipped(d.skipped as u64);
            for r in &d.requests {
                for a in &r.attempts {
                    s.attempt(a.latency, a.result);
                }
                match &r.status {
                    RequestStatus::Pending => {}
                    RequestStatus::Delivered => s.delivered(r.profiles as u64),
                    RequestStatus::Failed { reason } => s.failed(r.profiles as u64, reason),
                }
            }
        });
    }

    pub fn campaign(&self, campaign: &str) -> Option<CampaignView> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (total, by_template) = inner.campaigns.get(campaign)?;
        Some(CampaignView {
            target_id: campaign.to_string(),
            total: total.view(),
            templates: by_template.iter().map(|(k, v)| (k.clone(), v.view())).collect(),
        })
    }

    /// Every campaign counted, by target id.
    pub fn campaigns(&self) -> Vec<CampaignView> {
        let ids: Vec<String> = {
            let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let mut ids: Vec<String> = inner.campaigns.keys().cloned().collect();
            ids.sort();
            ids
        };
        ids.iter().filter_map(|id| self.campaign(id)).collect()
    }

    pub fn template(&self, template: &str) -> Option<StatsView> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.templates.get(template).map(DeliveryStats::view)
    }

    /// The per-template counters and histograms in Prometheus text format.
    pub fn render_prometheus(&self, out: &mut String) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let t = &inner.templates;
        let outcomes: [(&str, &str, TotalsOf); 2] = [
            ("hookgate_requests_total", "Outgoing requests finished, by outcome.", |s| s.request_totals),
            ("hookgate_profiles_total", "Profiles in finished requests, by outcome.", |s| s.profile_totals),
        ];
        for (metric, help, totals) in outcomes {
            family(out, metric, "counter", help);
            for (name, s) in t {
                let c = totals(s);
                for (outcome, n) in [("delivered", c.delivered), ("failed", c.failed)] {
                    let _ = writeln!(out, "{metric}{{template=\"{}\",outcome=\"{outcome}\"}} {n}", esc(name));
                }
            }
        }
        let replays: [(&str, &str, TotalsOf); 2] = [
            ("hookgate_requests_replayed_total", "Failed requests made pending again by a replay.", |s| {
                s.request_totals
            }),
            ("hookgate_profiles_replayed_total", "Profiles in replayed requests.", |s| s.profile_totals),
        ];
        for (metric, help, totals) in replays {
            family(out, metric, "counter", help);
            for (name, s) in t {
                let _ = writeln!(out, "{metric}{{template=\"{}\"}} {}", esc(name), totals(s).replayed);
            }
        }
        family(out, "hookgate_requests_pending", "gauge", "Outgoing requests not yet finished.");
        for (name, s) in t {
            let _ = writeln!(out, "hookgate_requests_pending{{template=\"{}\"}} {}", esc(name), s.requests.pending);
        }
        family(out, "hookgate_attempts_total", "counter", "Attempts, by result (success, retry, failure).");
        for (name, s) in t {
            for (result, n) in &s.attempts {
                let _ = writeln!(
                    out,
                    "hookgate_attempts_total{{template=\"{}\",result=\"{}\"}} {n}",
                    esc(name),
                    result.label()
                );
            }
        }
        family(out, "hookgate_attempt_duration_seconds", "histogram", "Attempt latency.");
        for (name, s) in t {
            let name = esc(name);
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += s.latency.counts[i];
                let le = if bound.is_infinite() { "+Inf".to_string() } else { bound.to_string() };
                let _ = writeln!(
                    out,
                    "hookgate_attempt_duration_seconds_bucket{{template=\"{name}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(out, "hookgate_attempt_duration_seconds_sum{{template=\"{name}\"}} {}", s.latency.sum);
            let _ = writeln!(out, "hookgate_attempt_duration_seconds_count{{template=\"{name}\"}} {cumulative}");
        }
    }
}

/// Picks one kind of totals out of a template's stats.
type TotalsOf = fn(&DeliveryStats) -> Totals;

/// The `# HELP` and `# TYPE` lines of a metric family.
pub fn family(out: &mut String, metric: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {metric} {help}");
    let _ = writeln!(out, "# TYPE {metric} {kind}");
}

/// Escapes a Prometheus label value.
pub fn esc(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_move_from_pending_to_outcomes() {
        let s = Stats::new();
        s.accepted("42", "orders", 3, 250);
        s.attempt("42", "orders", Duration::from_millis(20), AttemptResult::Success);
        s.delivered("42", "orders", 100);
        s.delivered("42", "orders", 100);
        s.failed("42", "orders", 50, "HTTP 400 Bad Request");
        let c = s.campaign("42").unwrap();
        assert_eq!(c.total.requests, Counts { delivered: 2, failed: 1, pending: 0 });
        assert_eq!(c.total.profiles, Counts { delivered: 200, failed: 50, pending: 0 });
        assert_eq!(c.total.errors.len(), 1);
        assert_eq!(c.total.errors[0].error, "Webhook Dispatch Failed");
        assert_eq!(c.total.errors[0].reason, "HTTP 400 Bad Request");
        assert_eq!(c.templates["orders"].requests.delivered, 2);
        assert!(s.campaign("43").is_none());
    }

    fn finished(campaign: &str, template: &str, outcomes: &[Option<&str>]) -> StoredDispatch {
        use crate::model::{AttemptRecord, DispatchId};
        let now = std::time::SystemTime::now();
        StoredDispatch {
            id: DispatchId::new(),
            template: template.into(),
            template_version: 1,
            campaign: campaign.into(),
            created_at: now,
            idempotency_key: None,
            skipped: 1,
            requests: outcomes
                .iter()
                .map(|failure| StoredRequest {
                    target: None,
                    profiles: 10,
                    body: None,
                    status: match failure {
                        None => RequestStatus::Delivered,
                        Some(reason) => RequestStatus::Failed { reason: reason.to_string() },
                    },
                    attempt: 1,
                    due: now,
                    attempts: vec![AttemptRecord {
                        attempt: 1,
                        at: now,
                        latency: Duration::from_millis(if failure.is_some() { 900 } else { 20 }),
                        status: Some(if failure.is_some() { 400 } else { 200 }),
                        error: failure.map(str::to_string),
                        result: if failure.is_some() { AttemptResult::Failure } else { AttemptResult::Success },
                    }],
                })
                .collect(),
        }
    }

    /// A pruned dispatch leaves its campaign's stats exactly as if it had never been; a
    /// campaign whose dispatches are all pruned is dropped; `/metrics` counters stay.
    #[test]
    fn pruned_dispatches_leave_the_campaign_stats() {
        let s = Stats::new();
        let old = finished("42", "orders", &[None, Some("HTTP 400")]);
        let kept = finished("42", "other", &[None]);
        let alone = finished("43", "orders", &[Some("HTTP 400")]);
        for d in [&old, &kept, &alone] {
            s.replay(d);
        }
        let only_kept = Stats::new();
        only_kept.replay(&kept);

        s.forget(&old);
        let c = s.campaign("42").unwrap();
        let expected = only_kept.campaign("42").unwrap();
        assert_eq!(c.total.requests, expected.total.requests);
        assert_eq!(c.total.profiles, expected.total.profiles);
        assert_eq!(c.total.skipped_profiles, 1);
        assert!(c.total.errors.is_empty(), "{:?}", c.total.errors);
        assert_eq!(c.total.attempts, expected.total.attempts);
        assert_eq!(c.total.latency_ms.count, 1);
        assert_eq!(c.total.latency_ms.mean, expected.total.latency_ms.mean);
        assert_eq!(c.templates.keys().collect::<Vec<_>>(), vec!["other"], "no dispatch of `orders` is left in 42");

        s.forget(&alone);
        assert!(s.campaign("43").is_none(), "every dispatch of 43 is pruned");
        assert_eq!(s.campaign_count(), 1);
        s.forget(&kept);
        assert_eq!(s.campaign_count(), 0);
        assert_eq!(s.template("orders").unwrap().requests.delivered, 1, "template counters keep counting");

        let shared = Stats::templates_only();
        shared.replay(&kept);
        assert!(shared.campaign("42").is_none());
        assert_eq!(shared.template("other").unwrap().requests.delivered, 1);
    }

    #[test]
    fn histogram_quantiles_are_bucket_bounds() {
        let mut h = Histogram::default();
        for _ in 0..99 {
            h.observe(Duration::from_millis(3));
        }
        h.observe(Duration::from_millis(700));
        assert_eq!(h.quantile(0.5), 0.005);
        assert_eq!(h.quantile(0.99), 0.005);
        assert_eq!(h.quantile(1.0), 0.7);
    }

    #[test]
    fn prometheus_text_has_series_per_template() {
        let s = Stats::new();
        s.accepted("1", "a\"b", 1, 1);
        s.attempt("1", "a\"b", Duration::from_millis(1), AttemptResult::Success);
        s.delivered("1", "a\"b", 1);
        let mut out = String::new();
        s.render_prometheus(&mut out);
        assert!(out.contains("hookgate_requests_total{template=\"a\\\"b\",outcome=\"delivered\"} 1"), "{out}");
        assert!(out.contains("hookgate_attempt_duration_seconds_bucket{template=\"a\\\"b\",le=\"+Inf\"} 1"));
    }

    #[test]
    fn a_replay_is_counted_apart_and_takes_no_failure_back() {
        let s = Stats::new();
        let metrics = || {
            let mut out = String::new();
            s.render_prometheus(&mut out);
            out
        };
        s.accepted("7", "dead", 1, 3);
        s.failed("7", "dead", 3, "HTTP 400 Bad Request");
        s.requeued("7", "dead", 3, "HTTP 400 Bad Request");
        let out = metrics();
        assert!(out.contains("hookgate_requests_total{template=\"dead\",outcome=\"failed\"} 1"), "{out}");
        assert!(out.contains("hookgate_profiles_total{template=\"dead\",outcome=\"failed\"} 3"), "{out}");
        assert!(out.contains("hookgate_requests_replayed_total{template=\"dead\"} 1"), "{out}");
        assert!(out.contains("hookgate_profiles_replayed_total{template=\"dead\"} 3"), "{out}");
        assert!(out.contains("hookgate_requests_pending{template=\"dead\"} 1"), "{out}");
        // The campaign's stats show the state now: pending again, not failed.
        assert_eq!(s.campaign("7").unwrap().total.requests, Counts { delivered: 0, failed: 0, pending: 1 });
        s.delivered("7", "dead", 3);
        let out = metrics();
        assert!(out.contains("hookgate_requests_total{template=\"dead\",outcome=\"failed\"} 1"), "{out}");
        assert!(out.contains("hookgate_requests_total{template=\"dead\",outcome=\"delivered\"} 1"), "{out}");
        assert_eq!(s.campaign("7").unwrap().total.requests, Counts { delivered: 1, failed: 0, pending: 0 });
    }
}
