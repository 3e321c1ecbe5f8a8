//! Group commit: callers hand what they want written to one writer task and wait for its
//! answer; the writer takes whatever is waiting at that moment and writes it in one
//! statement (one transaction, one flush of the database's log), then answers them all.
//! Under load many writes share a commit; alone, a write waits for nothing.

use std::collections::VecDeque;

use tokio::sync::{mpsc, oneshot};

/// One write waiting for the next group, and who waits for its answer.
pub(crate) struct Waiting<T, R> {
    pub(crate) item: T,
    reply: oneshot::Sender<R>,
}

impl<T, R> Waiting<T, R> {
    pub(crate) fn answer(self, answer: R) {
        let _ = self.reply.send(answer);
    }
}

/// The callers' side.
pub(crate) struct Submit<T, R>(mpsc::UnboundedSender<Waiting<T, R>>);

impl<T, R> Submit<T, R> {
    /// Queues `item` and waits for the writer's answer; `None` when the writer has stopped.
    pub(crate) async fn call(&self, item: T) -> Option<R> {
        let (reply, answer) = oneshot::channel();
        self.0.send(Waiting { item, reply }).ok()?;
        answer.await.ok()
    }
}

/// The writer's side: the waiting writes, taken a group at a time.
pub(crate) struct Groups<T, R> {
    rx: mpsc::UnboundedReceiver<Waiting<T, R>>,
    /// Writes that arrived but did not fit in the last group, oldest first.
    carried: VecDeque<Waiting<T, R>>,
}

pub(crate) fn channel<T, R>() -> (Submit<T, R>, Groups<T, R>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Submit(tx), Groups { rx, carried: VecDeque::new() })
}

impl<T, R> Groups<T, R> {
    /// The next group: everything waiting, in order of arrival, that `fits` accepts (it is
    /// asked about each in turn and keeps its own count: a size limit, a key that may appear
    /// once a statement). What it refuses waits for a later group, keeping its place. The
    /// first write is always taken, even one `fits` refuses (too big for any group). Waits when nothing
    /// waits; `None` once every caller is gone and nothing is left.
    pub(crate) async fn next(&mut self, mut fits: impl FnMut(&T) -> bool) -> Option<Vec<Waiting<T, R>>> {
        if self.carried.is_empty() {
            self.carried.push_back(self.rx.recv().await?);
        }
        while let Ok(more) = self.rx.try_recv() {
            self.carried.push_back(more);
        }
        let mut group = Vec::new();
        let mut later = VecDeque::new();
        for waiting in self.carried.drain(..) {
            if fits(&waiting.item) || group.is_empty() {
                group.push(waiting);
            } else {
                later.push_back(waiting);
            }
        }
        self.carried = later;
        Some(group)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[tokio::test]
    async fn a_group_takes_what_waits_and_what_does_not_fit_waits_its_turn() {
        let (submit, mut groups) = channel::<(u32, usize), usize>();
        let submit = std::sync::Arc::new(submit);
        // (key, size): key 1 twice, and a size over the limit alone.
        let items = [(1, 1), (2, 1), (1, 1), (3, 10), (4, 1)];
        let calls: Vec<_> = items
            .iter()
            .map(|&item| {
                let submit = submit.clone();
                tokio::spawn(async move { submit.call(item).await })
            })
            .collect();
        // Let every call queue (each sends before it awaits the answer).
        while groups.rx.len() < items.len() {
            tokio::task::yield_now().await;
        }
        let mut seen_groups = Vec::new();
        for n in 0.. {
            let (mut keys, mut size) = (HashSet::new(), 0);
            let group = groups.next(|&(key, s)| {
                if size + s > 4 || !keys.insert(key) {
                    return false;
                }
                size += s;
                true
            });
            let group = group.await.expect("callers are there");
            seen_groups.push(group.iter().map(|w| w.item.0).collect::<Vec<_>>());
            for waiting in group {
                waiting.answer(n);
            }
            if seen_groups.iter().map(Vec::len).sum::<usize>() == items.len() {
                break;
            }
        }
        // The second key 1 and the oversized write wait; the oversized one goes alone,
        // first of its group, since a group always takes its first.
        assert_eq!(seen_groups, vec![vec![1, 2, 4], vec![1], vec![3]]);
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.expect("the call task"));
        }
        assert_eq!(answers, vec![Some(0), Some(0), Some(1), Some(2), Some(0)]);
    }

    #[tokio::test]
    async fn a_call_after_the_writer_stopped_answers_none() {
        let (submit, groups) = channel::<u32, u32>();
        drop(groups);
        assert_eq!(submit.call(1).await, None);
    }
}
