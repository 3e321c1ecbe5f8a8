//! The in-process queue: a heap ordered by due time. Fast; its jobs are lost on restart.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{Job, Queue, QueueError};

#[derive(Default)]
pub struct MemoryQueue {
    heap: Mutex<BinaryHeap<Reverse<Entry>>>,
    seq: AtomicU64,
    /// Jobs handed out and not yet completed or pushed back.
    leased: AtomicUsize,
    wake: Notify,
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

    /// Pops the next due job, or says how long until one is due.
    fn try_pop(&self) -> Result<Job, Option<Duration>> {
        let mut heap = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        let now = SystemTime::now();
        match heap.peek() {
            Some(Reverse(top)) if top.due <= now => {
                let Reverse(entry) = heap.pop().expect("peeked");
                self.leased.fetch_add(1, Ordering::Relaxed);
                Ok(entry.job)
            }
            Some(Reverse(top)) => Err(Some(top.due.duration_since(now).unwrap_or_default())),
            None => Err(None),
        }
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn push(&self, jobs: Vec<Job>) -> Result<(), QueueError> {
        {
            let mut heap = self.heap.lock().unwrap_or_else(|e| e.into_inner());
            for job in jobs {
                let seq = self.seq.fetch_add(1, Ordering::Relaxed);
                heap.push(Reverse(Entry { due: job.due, seq, job }));
            }
        }
        self.wake.notify_waiters();
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
        let waiting = self.heap.lock().unwrap_or_else(|e| e.into_inner()).len();
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
