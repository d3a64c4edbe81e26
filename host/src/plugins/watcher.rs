//! Hot swap on file change: watches the directories of the plugin files
//! (so replacing a file by rename is seen too), debounces bursts of events
//! per file, then reloads the plugins that use it off the async runtime.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::set::PluginSet;

/// Keeps the watch running; dropping it stops watching.
pub struct PluginWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PluginWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Starts watching the files of the plugins in `set` (as it is now and as
/// later reloads replace it; directories are taken from the set at start).
pub fn watch(set: Arc<ArcSwap<PluginSet>>, debounce: Duration) -> notify::Result<PluginWatcher> {
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
    let mut dirs: Vec<PathBuf> = set
        .load()
        .paths()
        .iter()
        .filter_map(|p| absolute(p).parent().map(Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    let task = tokio::spawn(async move {
        let mut due: HashMap<PathBuf, Instant> = HashMap::new();
        loop {
            let next = due.values().min().copied();
            tokio::select! {
                changed = rx.recv() => match changed {
                    Some(path) => {
                        let path = absolute(&path);
                        if set.load().paths().iter().any(|p| absolute(p) == path) {
                            due.insert(path, Instant::now() + debounce);
                        }
                    }
                    None => return,
                },
                _ = async { tokio::time::sleep_until(next.unwrap_or_else(Instant::now)).await }, if next.is_some() => {
                    let now = Instant::now();
                    let ready: Vec<PathBuf> = due.iter().filter(|(_, t)| **t <= now).map(|(p, _)| p.clone()).collect();
                    for path in ready {
                        due.remove(&path);
                        let plugins: Vec<_> = set.load().iter().filter(|p| absolute(p.path()) == path).cloned().collect();
                        for plugin in plugins {
                            tokio::task::spawn_blocking(move || {
                                let _ = plugin.reload(false);
                            });
                        }
                    }
                }
            }
        }
    });
    Ok(PluginWatcher {
        _watcher: watcher,
        task,
    })
}
