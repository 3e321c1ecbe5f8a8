//! Isolation between destinations: at most `max_concurrency` requests in flight to one
//! destination (scheme, host, port), and optionally at most `rate_limit` per second, so a
//! slow or failing endpoint never takes every worker. A job whose destination is full is
//! parked beside it, without counting as an attempt and without holding a worker, and goes
//! back to the queue as soon as a request to that destination ends.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use url::Url;

use crate::config::{Destinations, MAX_RATE_LIMIT, MIN_RATE_LIMIT};
use crate::queue::Job;

const MAX_TRACKED: usize = 10_000;

pub enum Admission {
    /// Send now; the permit is held until the attempt ends.
    Go(Permit),
    /// The destination is at its concurrency limit: the job waits beside it, holding no
    /// worker, and goes back to the queue when a request to the destination ends.
    Parked,
    /// The destination's rate limit: ask again after this long.
    Later(Duration),
}

#[derive(Default)]
struct Slots {
    in_flight: usize,
    parked: VecDeque<Job>,
}

struct Destination {
    max: usize,
    slots: Mutex<Slots>,
    /// Tokens left and when they were counted (rate limit only).
    bucket: Mutex<(f64, Instant)>,
}

/// A request in flight to a destination; dropping it makes room, and hands the
/// destination's longest-parked job back to the queue.
pub struct Permit {
    destination: Arc<Destination>,
    released: mpsc::UnboundedSender<Job>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut slots = self.destination.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.in_flight = slots.in_flight.saturating_sub(1);
        if let Some(job) = slots.parked.pop_front() {
            let _ = self.released.send(job);
        }
    }
}

pub struct DestinationLimits {
    settings: Destinations,
    tracked: Mutex<HashMap<String, Arc<Destination>>>,
    released: mpsc::UnboundedSender<Job>,
}

impl DestinationLimits {
    /// The limits, and the jobs they release from parking (to be put back in the queue).
    pub fn new(settings: Destinations) -> (Self, mpsc::UnboundedReceiver<Job>) {
        let (released, rx) = mpsc::unbounded_channel();
        (Self { settings, tracked: Mutex::new(HashMap::new()), released }, rx)
    }

    fn destination(&self, url: &Url) -> Arc<Destination> {
        // `scheme://host[:port]`, the port only when it is not the scheme's default (the URL
        // parser drops a default one): a slice of the URL itself unless it has credentials.
        let bare;
        let key = if url.username().is_empty() && url.password().is_none() {
            &url[..url::Position::AfterPort]
        } else {
            bare = match url.port() {
                Some(port) => format!("{}://{}:{port}", url.scheme(), url.host_str().unwrap_or_default()),
                None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default()),
            };
            bare.as_str()
        };
        let mut tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(destination) = tracked.get(key) {
            return destination.clone();
        }
        if tracked.len() > MAX_TRACKED {
            tracked.retain(|_, d| {
                let slots = d.slots.lock().unwrap_or_else(|e| e.into_inner());
                slots.in_flight > 0 || !slots.parked.is_empty()
            });
        }
        let destination = Arc::new(Destination {
            max: self.settings.max_concurrency.max(1),
            slots: Mutex::new(Slots::default()),
            bucket: Mutex::new((self.rate().unwrap_or(1.0).max(1.0), Instant::now())),
        });
        tracked.insert(key.to_owned(), destination.clone());
        destination
    }

    /// The rate limit in requests per second, `None` for none (0, or not a number).
    fn rate(&self) -> Option<f64> {
        let rate = self.settings.rate_limit;
        (rate.is_finite() && rate > 0.0).then(|| rate.clamp(MIN_RATE_LIMIT, MAX_RATE_LIMIT))
    }

    /// Whether `job`, a request to `url`, may go now.
    pub fn admit(&self, url: &Url, job: &Job) -> Admission {
        let destination = self.destination(url);
        if let Some(rate) = self.rate() {
            let mut bucket = destination.bucket.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let (tokens, last) = *bucket;
            let tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate.max(1.0));
            if tokens < 1.0 {
                *bucket = (tokens, now);
                // At most 1000 s (the slowest rate); checked, so no value can panic.
                let wait = Duration::try_from_secs_f64((1.0 - tokens) / rate).unwrap_or(Duration::from_secs(1000));
                return Admission::Later(wait.min(Duration::from_secs(1000)));
            }
            *bucket = (tokens - 1.0, now);
        }
        let mut slots = destination.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.in_flight < destination.max {
            slots.in_flight += 1;
            drop(slots);
            return Admission::Go(Permit { destination, released: self.released.clone() });
        }
        slots.parked.push_back(job.clone());
        Admission::Parked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DispatchId;
    use std::time::SystemTime;

    fn url(s: &str) -> Url {
        s.parse().unwrap()
    }

    fn job(request: u32) -> Job {
        Job { dispatch: DispatchId::new(), request, attempt: 1, due: SystemTime::now() }
    }

    #[test]
    fn concurrency_is_per_destination_and_parked_jobs_come_back_in_order() {
        let (limits, mut released) = DestinationLimits::new(Destinations { max_concurrency: 2, rate_limit: 0.0 });
        let a = url("http://a.example/x");
        let first = limits.admit(&a, &job(1));
        let _second = limits.admit(&a, &job(2));
        assert!(matches!(first, Admission::Go(_)));
        assert!(matches!(limits.admit(&a, &job(3)), Admission::Parked), "a third request to a is parked");
        assert!(matches!(limits.admit(&a, &job(4)), Admission::Parked));
        assert!(matches!(limits.admit(&url("http://b.example/"), &job(5)), Admission::Go(_)), "b is not held up by a");
        assert!(
            matches!(limits.admit(&url("http://a.example:8080/"), &job(6)), Admission::Go(_)),
            "another port, another destination"
        );
        assert!(released.try_recv().is_err(), "nothing is released while a is full");
        drop(first);
        assert_eq!(released.try_recv().unwrap().request, 3, "the longest-parked job goes back first");
        assert!(released.try_recv().is_err(), "one ended request releases one job");
        assert!(matches!(limits.admit(&a, &job(3)), Admission::Go(_)), "room again once a request ends");
    }

    /// One destination whatever the path, an explicit default port or credentials say; the
    /// scheme, the host and a port that is not the default make another.
    #[test]
    fn a_destination_is_scheme_host_and_port() {
        let (limits, _released) = DestinationLimits::new(Destinations { max_concurrency: 1, rate_limit: 0.0 });
        let _held = limits.admit(&url("https://a.example/x"), &job(1));
        for same in ["https://a.example:443/y?q=1", "https://user:pw@a.example/z", "https://A.EXAMPLE/"] {
            assert!(matches!(limits.admit(&url(same), &job(2)), Admission::Parked), "{same}");
        }
        for other in ["http://a.example/", "https://a.example:8443/", "https://b.example/", "https://u@a.example:8443/"]
        {
            assert!(matches!(limits.admit(&url(other), &job(3)), Admission::Go(_)), "{other}");
        }
    }

    #[test]
    fn rate_limit_spaces_requests() {
        let (limits, _released) = DestinationLimits::new(Destinations { max_concurrency: 100, rate_limit: 2.0 });
        let a = url("https://a.example/");
        assert!(matches!(limits.admit(&a, &job(1)), Admission::Go(_)));
        assert!(matches!(limits.admit(&a, &job(2)), Admission::Go(_)));
        match limits.admit(&a, &job(3)) {
            Admission::Later(wait) => assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "{wait:?}"),
            _ => panic!("a third request within the same second must wait"),
        }
    }

    /// Rates that made `Duration::from_secs_f64` panic (a tiny one: a wait past the range
    /// of `Duration`) or made no sense (negative, NaN, infinite) never panic.
    #[test]
    fn extreme_rate_limits_do_not_panic() {
        let a = url("https://a.example/");
        for rate in [1e-300, f64::MIN_POSITIVE, 5e-324, MIN_RATE_LIMIT] {
            let (limits, _released) = DestinationLimits::new(Destinations { max_concurrency: 10, rate_limit: rate });
            assert!(matches!(limits.admit(&a, &job(1)), Admission::Go(_)), "{rate}: the first request goes");
            match limits.admit(&a, &job(2)) {
                Admission::Later(wait) => assert!(wait <= Duration::from_secs(1000), "{rate}: {wait:?}"),
                _ => panic!("{rate}: a second request must wait"),
            }
        }
        for rate in [-1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0] {
            let (limits, _released) = DestinationLimits::new(Destinations { max_concurrency: 10, rate_limit: rate });
            for i in 0..5 {
                assert!(matches!(limits.admit(&a, &job(i)), Admission::Go(_)), "{rate}: no limit");
            }
        }
        let (limits, _released) = DestinationLimits::new(Destinations { max_concurrency: 1000, rate_limit: 1e300 });
        for i in 0..100 {
            assert!(matches!(limits.admit(&a, &job(i)), Admission::Go(_)), "a huge rate is the fastest one");
        }
    }
}
