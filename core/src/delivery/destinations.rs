//! Isolation between destinations: at most `max_concurrency` requests in flight to one
//! destination (scheme, host, port), and optionally at most `rate_limit` per second, so a
//! slow or failing endpoint never takes every worker. A worker waits briefly for its
//! destination to have room (a busy healthy destination frees a slot within moments); if
//! none comes, the job goes back to the queue for a moment, without counting as an attempt,
//! and the worker moves on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Url;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Destinations;

/// How long a worker waits for room at its job's destination before putting the job back.
const BUSY_WAIT: Duration = Duration::from_millis(50);
/// How long a job put back waits before it is handed out again.
const REQUEUE_DELAY: Duration = Duration::from_millis(10);
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

    /// Whether a request to `url` may go now (waiting up to [`BUSY_WAIT`] for room).
    pub async fn admit(&self, url: &Url) -> Admission {
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
        if let Ok(permit) = destination.permits.clone().try_acquire_owned() {
            return Admission::Go(permit);
        }
        match tokio::time::timeout(BUSY_WAIT, destination.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Admission::Go(permit),
            _ => Admission::Later(REQUEUE_DELAY),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn concurrency_is_per_destination() {
        let limits = DestinationLimits::new(Destinations { max_concurrency: 2, rate_limit: 0.0 });
        let a = url("http://a.example/x");
        let first = limits.admit(&a).await;
        let _second = limits.admit(&a).await;
        assert!(matches!(first, Admission::Go(_)));
        let started = Instant::now();
        assert!(matches!(limits.admit(&a).await, Admission::Later(_)), "a third request to a waits, then goes back");
        assert!(started.elapsed() >= BUSY_WAIT);
        assert!(matches!(limits.admit(&url("http://b.example/")).await, Admission::Go(_)), "b is not held up by a");
        assert!(
            matches!(limits.admit(&url("http://a.example:8080/")).await, Admission::Go(_)),
            "another port, another destination"
        );
        drop(first);
        assert!(matches!(limits.admit(&a).await, Admission::Go(_)), "room again once a request ends");
    }

    #[tokio::test]
    async fn rate_limit_spaces_requests() {
        let limits = DestinationLimits::new(Destinations { max_concurrency: 100, rate_limit: 2.0 });
        let a = url("https://a.example/");
        assert!(matches!(limits.admit(&a).await, Admission::Go(_)));
        assert!(matches!(limits.admit(&a).await, Admission::Go(_)));
        match limits.admit(&a).await {
            Admission::Later(wait) => assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "{wait:?}"),
            Admission::Go(_) => panic!("a third request within the same second must wait"),
        }
    }
}
