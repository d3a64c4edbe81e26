//! Debounced file watching, for the config file and plugin files.
//!
//! Watches the directories of the files (so replacing a file by rename, as
//! editors and deploy tools do, is seen), collects events per file, and calls
//! back once a file has been quiet for the debounce time — or, for a file
//! that never goes quiet (rewritten more often than the debounce time), at
//! the latest [`DEBOUNCE_MAX`] after its first change.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The longest a change waits for quiet before it is acted on anyway.
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(1);

/// A running watch; dropping it stops it.
pub struct FileWatch {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Calls `on_change(file)` (from a tokio task) after one of `files` changed
/// and stayed unchanged for `debounce`, or [`DEBOUNCE_MAX`] after it first
/// changed if it keeps changing. Removals are ignored: a file being
/// replaced is reported when its new content is in place.
pub fn watch_files(
    files: Vec<PathBuf>,
    debounce: Duration,
    on_change: impl Fn(PathBuf) + Send + 'static,
) -> notify::Result<FileWatch> {
    let files: Vec<PathBuf> = files.iter().map(|f| absolute(f)).collect();
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_) | EventKind::Remove(_)) {
            return;
        }
        for path in event.paths {
            let _ = tx.send(path);
        }
    })?;
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    let task = tokio::spawn(async move {
        // Per file: when it is due, and the latest it may become due.
        let mut due: HashMap<PathBuf, (Instant, Instant)> = HashMap::new();
        loop {
            let next = due.values().map(|(at, _)| *at).min();
            tokio::select! {
                changed = rx.recv() => match changed {
                    Some(path) => {
                        let path = absolute(&path);
                        if files.contains(&path) {
                            let now = Instant::now();
                            let (at, latest) = due.entry(path).or_insert((now, now + DEBOUNCE_MAX));
                            *at = (now + debounce).min(*latest);
                        }
                    }
                    None => return,
                },
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    let now = Instant::now();
                    let ready: Vec<PathBuf> = due.iter().filter(|(_, (t, _))| *t <= now).map(|(p, _)| p.clone()).collect();
                    for path in ready {
                        due.remove(&path);
                        on_change(path);
                    }
                }
            }
        }
    });
    Ok(FileWatch {
        _watcher: watcher,
        task,
    })
}
