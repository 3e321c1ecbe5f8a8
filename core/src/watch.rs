//! Watching a folder: after changes settle, run a rescan.
//!
//! The folder is watched, not its files: editors that write a temp file and rename it over
//! the original, and Kubernetes ConfigMap mounts (files are symlinks into a `..data`
//! directory that is swapped atomically), both show up as events in the folder. Every event
//! batch triggers a full rescan, which compares file contents with what is loaded, so the
//! kind of event never matters. A periodic rescan catches what events miss.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{error, warn};

/// Longest a rescan waits for events to stop.
const MAX_SETTLE: Duration = Duration::from_secs(2);

/// What to run after changes: a rescan of the folder.
pub type Rescan = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Starts watching `dir`. The task ends when `shutdown` turns true.
pub fn spawn(
    dir: &Path,
    debounce: Duration,
    rescan_every: Duration,
    mut shutdown: watch::Receiver<bool>,
    rescan: Rescan,
) -> Result<tokio::task::JoinHandle<()>, notify::Error> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
        Ok(_) => {
            let _ = tx.send(());
        }
        Err(e) => warn!("folder watcher: {e}"),
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;

    Ok(tokio::spawn(async move {
        let _watcher = watcher; // dropped (and unwatched) when the task ends
        let mut ticker = tokio::time::interval_at(Instant::now() + rescan_every, rescan_every);
        loop {
            tokio::select! {
                event = rx.recv() => {
                    if event.is_none() {
                        return;
                    }
                    settle(&mut rx, debounce).await;
                    supervised(&rescan).await;
                }
                _ = ticker.tick() => supervised(&rescan).await,
                _ = shutdown.changed() => return,
            }
        }
    }))
}

/// Runs one rescan as a task of its own, so that a panic in it (a bug) is reported and
/// ends that rescan only: the watcher goes on, and what the last good rescan published
/// stays live.
async fn supervised(rescan: &Rescan) {
    if let Err(e) = tokio::spawn(rescan()).await
        && e.is_panic()
    {
        let panic = e.into_panic();
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        error!("a reload panicked ({message}); this is a bug. What was live stays live, and reloads go on");
    }
}

/// Waits until no event has come for `debounce` (at most [`MAX_SETTLE`]), so an editor's
/// save, which is several events, is one rescan.
async fn settle(rx: &mut mpsc::UnboundedReceiver<()>, debounce: Duration) {
    let deadline = Instant::now() + MAX_SETTLE;
    loop {
        let wait = debounce.min(deadline.saturating_duration_since(Instant::now()));
        if wait.is_zero() {
            return;
        }
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(())) => continue,
            _ => return,
        }
    }
}

/// The files of a folder with one of `extensions`, not hidden (editors' temp files and a
/// ConfigMap's `..data` entries start with `.`), following symlinks, sorted by path.
pub fn folder_files(dir: &Path, extensions: &[&str]) -> Vec<std::path::PathBuf> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<std::path::PathBuf> = read
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or(".");
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            !name.starts_with('.') && extensions.contains(&ext) && std::fs::metadata(p).is_ok_and(|m| m.is_file())
        })
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A rescan that panics does not end the watcher: the next change is rescanned.
    #[tokio::test]
    async fn a_panicking_rescan_does_not_stop_the_watcher() {
        let dir = tempfile::tempdir().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let rescan: Rescan = Arc::new(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if n == 0 {
                    panic!("a bug in the first reload");
                }
            })
        });
        let (_stop, shutdown) = watch::channel(false);
        let task = spawn(dir.path(), Duration::from_millis(10), Duration::from_secs(3600), shutdown, rescan).unwrap();
        let wait_calls = async |n: usize| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while calls.load(Ordering::SeqCst) < n {
                assert!(std::time::Instant::now() < deadline, "no rescan #{n}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        std::fs::write(dir.path().join("a.yaml"), "1").unwrap();
        wait_calls(1).await;
        // The first rescan panicked; a later change is still picked up.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut i = 0;
        while calls.load(Ordering::SeqCst) < 2 {
            assert!(!task.is_finished(), "the watcher stopped after a panic");
            assert!(std::time::Instant::now() < deadline, "no rescan after the panic");
            i += 1;
            std::fs::write(dir.path().join("b.yaml"), i.to_string()).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        wait_calls(2).await;
        assert!(!task.is_finished());
    }
}
