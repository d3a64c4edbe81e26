//! Hot swap on file change: when a plugin's file settles after a change, the
//! plugins that use it reload, off the async runtime.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::set::PluginSet;
use crate::watch::{FileWatch, absolute, watch_files};

/// Watches the files of the plugins in `set`. The set may be replaced later
/// (a config reload); callbacks look plugins up in the current one.
pub fn watch(set: Arc<ArcSwap<PluginSet>>, debounce: Duration) -> notify::Result<FileWatch> {
    let files = set.load().paths();
    watch_files(files, debounce, move |path| {
        let plugins: Vec<_> = set
            .load()
            .iter()
            .filter(|p| absolute(p.path()) == path)
            .cloned()
            .collect();
        for plugin in plugins {
            tokio::task::spawn_blocking(move || {
                let _ = plugin.reload(false);
            });
        }
    })
}
