//! The in-process queue: jobs due when they are pushed wait in a first-in, first-out line,
//! and jobs due later (retries) in a heap ordered by due time. Fast; its jobs are lost on
//! restart.
//!
//! Most jobs are due at once (a dispatch's requests), so they skip the heap: taking one is
//! a pop from the front of a line, not a sift through 100,000 entries. A job of the heap
//! whose time has come goes first when it became due before the line's oldest job.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{Job, Queue, QueueError};

#[derive(Default)]
pub struct MemoryQueue {
    waiting: Mutex<Waiting>,
    seq: AtomicU64,
    /// Jobs handed out and not yet completed or pushed back.
    leased: AtomicUsize,
    wake: Notify,
}

#[derive(Default)]
struct Waiting {
    /// Jobs that were due when pushed, oldest first.
    due: VecDeque<Job>,
    /// Jobs due later, soonest first.
    later: BinaryHeap<Reverse<Entry>>,
}

impl Waiting {
    fn len(&self) -> usize {
        self.due.len() + self.later.len()
    }
}

#[derive(Debug)]
struct Entry {
    due: SystemTime,
    seq: u64,
    job: Job,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    fn release(&self) {
        let _ = self.leased.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pops the next due job, or says how long until one is due.
    fn try_pop(&self) -> Result<Job, Option<Duration>> {
        let mut waiting = self.lock();
        let now = SystemTime::now();
        let from_heap = match (waiting.later.peek(), waiting.due.front()) {
            (Some(Reverse(top)), Some(oldest)) => top.due <= now && top.due < oldest.due,
            (Some(Reverse(top)), None) if top.due > now => {
                return Err(Some(top.due.duration_since(now).unwrap_or_default()));
            }
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return Err(None),
        };
        let job = if from_heap {
            waiting.later.pop().expect("peeked").0.job
        } else {
            waiting.due.pop_front().expect("looked at")
        };
        self.leased.fetch_add(1, Ordering::Relaxed);
        Ok(job)
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn push(&self, jobs: Vec<Job>) -> Result<(), QueueError> {
        let one = jobs.len() == 1;
        {
            let mut waiting = self.lock();
            let now = SystemTime::now();
            for job in jobs {
                if job.due <= now {
                    waiting.due.push_back(job);
                } else {
                    let seq = self.seq.fetch_add(1, Ordering::Relaxed);
                    waiting.later.push(Reverse(Entry { due: job.due, seq, job }));
                }
            }
        }
        // One job wakes one waiting worker, not all of them to find it taken.
        if one {
            self.wake.notify_one()
        } else {
            self.wake.notify_waiters()
        }
        Ok(())
    }

    async fn retry(&self, job: Job) -> Result<(), QueueError> {
        self.release();
        self.push(vec![job]).await
    }

    async fn next(&self) -> Result<Job, QueueError> {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_pop() {
                Ok(job) => return Ok(job),
                Err(Some(wait)) => {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = notified => {}
                    }
                }
                Err(None) => notified.await,
            }
        }
    }

    async fn complete(&self, _job: &Job) -> Result<(), QueueError> {
        self.release();
        Ok(())
    }

    async fn len(&self) -> Result<usize, QueueError> {
        let waiting = self.lock().len();
        Ok(waiting + self.leased.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DispatchId;

    fn job(request: u32, attempt: u32, due: SystemTime) -> Job {
        Job { dispatch: DispatchId::new(), request, attempt, due }
    }

    #[tokio::test]
    async fn hands_out_by_due_time_and_waits_for_future_jobs() {
        let q = MemoryQueue::new();
        let now = SystemTime::now();
        q.push(vec![job(1, 1, now + Duration::from_millis(150)), job(2, 1, now)]).await.unwrap();
        assert_eq!(q.next().await.unwrap().request, 2);
        let started = std::time::Instant::now();
        assert_eq!(q.next().await.unwrap().request, 1);
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(q.len().await.unwrap(), 2);
    }

    /// Jobs due when pushed come out in the order they went in; a retry whose time has come
    /// goes before the line's jobs that became due after it, and after those due before it.
    #[tokio::test]
    async fn due_jobs_in_order_and_a_retry_by_its_time() {
        let q = MemoryQueue::new();
        let now = SystemTime::now();
        let soon = now + Duration::from_millis(50);
        q.push(vec![job(1, 1, now), job(2, 1, now)]).await.unwrap();
        q.push(vec![job(9, 2, soon)]).await.unwrap();
        assert_eq!(q.next().await.unwrap().request, 1, "the line goes before a retry not yet due");
        // Once the retry is due, jobs pushed after its time wait behind it.
        let retry = q.next().await.unwrap();
        assert_eq!(retry.request, 2);
        while SystemTime::now() <= soon {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        q.push(vec![job(3, 1, SystemTime::now())]).await.unwrap();
        assert_eq!(q.next().await.unwrap().request, 9, "due before the line's oldest");
        assert_eq!(q.next().await.unwrap().request, 3);
        assert_eq!(q.len().await.unwrap(), 4, "all four handed out, none completed");
    }

    /// One job pushed wakes a waiting worker even when many are waiting, and each job is
    /// handed to one of them.
    #[tokio::test]
    async fn each_job_pushed_reaches_one_of_many_waiting_consumers() {
        let q = std::sync::Arc::new(MemoryQueue::new());
        let consumers: Vec<_> = (0..8)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move { q.next().await.unwrap().request })
            })
            .collect();
        tokio::task::yield_now().await;
        for i in 0..8 {
            q.push(vec![job(i, 1, SystemTime::now())]).await.unwrap();
        }
        let mut got = Vec::new();
        for consumer in consumers {
            got.push(tokio::time::timeout(Duration::from_secs(5), consumer).await.unwrap().unwrap());
        }
        got.sort();
        assert_eq!(got, (0..8).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_waiting_consumer_wakes_on_push() {
        let q = std::sync::Arc::new(MemoryQueue::new());
        let consumer = tokio::spawn({
            let q = q.clone();
            async move { q.next().await.unwrap() }
        });
        tokio::task::yield_now().await;
        q.push(vec![job(7, 1, SystemTime::now())]).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), consumer).await.unwrap().unwrap();
        assert_eq!(got.request, 7);
        q.complete(&got).await.unwrap();
        assert_eq!(q.len().await.unwrap(), 0);
    }
}
