//! Isolation between destinations: at most `max_concurrency` requests in flight to one
//! destination (scheme, host, port), and optionally at most `rate_limit` per second, so a
//! slow or failing endpoint never takes every worker. A job that may not go now is put
//! back in the queue for a moment, without counting as an attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Url;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Destinations;

/// How long a job waits before asking again when its destination is at its limit.
const BUSY_WAIT: Duration = Duration::from_millis(50);
const MAX_TRACKED: usize = 10_000;

pub enum Admission {
    /// Send now; the permit is held until the attempt ends.
    Go(OwnedSemaphorePermit),
    /// Ask again after this long.
    Later(Duration),
}

struct Destination {
    permits: Arc<Semaphore>,
    /// Tokens left and when they were counted (rate limit only).
    bucket: Mutex<(f64, Instant)>,
}

pub struct DestinationLimits {
    settings: Destinations,
    tracked: Mutex<HashMap<String, Arc<Destination>>>,
}

impl DestinationLimits {
    pub fn new(settings: Destinations) -> Self {
        Self { settings, tracked: Mutex::new(HashMap::new()) }
    }

    fn destination(&self, url: &Url) -> Arc<Destination> {
        let key = format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(0)
        );
        let mut tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
        if tracked.len() > MAX_TRACKED {
            let max = self.settings.max_concurrency;
            tracked.retain(|_, d| d.permits.available_permits() < max);
        }
        tracked
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Destination {
                    permits: Arc::new(Semaphore::new(self.settings.max_concurrency.max(1))),
                    bucket: Mutex::new((self.settings.rate_limit.max(1.0), Instant::now())),
                })
            })
            .clone()
    }

    /// Whether a request to `url` may go now.
    pub fn admit(&self, url: &Url) -> Admission {
        let destination = self.destination(url);
        let rate = self.settings.rate_limit;
        if rate > 0.0 {
            let mut bucket = destination.bucket.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let (tokens, last) = *bucket;
            let tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate.max(1.0));
            if tokens < 1.0 {
                *bucket = (tokens, now);
                return Admission::Later(Duration::from_secs_f64((1.0 - tokens) / rate));
            }
            *bucket = (tokens - 1.0, now);
        }
        match destination.permits.clone().try_acquire_owned() {
            Ok(permit) => Admission::Go(permit),
            Err(_) => Admission::Later(BUSY_WAIT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        s.parse().unwrap()
    }

    #[test]
    fn concurrency_is_per_destination() {
        let limits = DestinationLimits::new(Destinations { max_concurrency: 2, rate_limit: 0.0 });
        let a = url("http://a.example/x");
        let held: Vec<_> = (0..2).map(|_| matches!(limits.admit(&a), Admission::Go(_))).collect();
        assert_eq!(held, vec![true, true]);
        // The permits above were dropped: they are free again.
        let _p1 = limits.admit(&a);
        let _p2 = limits.admit(&a);
        assert!(matches!(limits.admit(&a), Admission::Later(_)), "a third request to a waits");
        assert!(matches!(limits.admit(&url("http://b.example/")), Admission::Go(_)), "b is not held up by a");
        assert!(
            matches!(limits.admit(&url("http://a.example:8080/")), Admission::Go(_)),
            "another port is another destination"
        );
    }

    #[test]
    fn rate_limit_spaces_requests() {
        let limits = DestinationLimits::new(Destinations { max_concurrency: 100, rate_limit: 2.0 });
        let a = url("https://a.example/");
        assert!(matches!(limits.admit(&a), Admission::Go(_)));
        assert!(matches!(limits.admit(&a), Admission::Go(_)));
        match limits.admit(&a) {
            Admission::Later(wait) => assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "{wait:?}"),
            Admission::Go(_) => panic!("a third request within the same second must wait"),
        }
    }
}
