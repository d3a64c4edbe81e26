//! All configured plugins, by name. Built from a config (reusing plugins of
//! a previous set whose file and settings did not change), listed for the
//! admin API, and looked up by the alert loop, the optimizer loop and the
//! load generator.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::alert::AlertPlugin;
use super::engine::{EngineSlot, PluginEngine};
use super::generator::GeneratorPlugin;
use super::optimizer::OptimizerPlugin;
use super::plugin::{PluginView, Reloaded};
use crate::config::{Config, ConfigErrors, Loaded, PluginKind, PluginSection};

/// A plugin of any kind.
#[derive(Clone)]
pub enum AnyPlugin {
    Generator(Arc<GeneratorPlugin>),
    Optimizer(Arc<OptimizerPlugin>),
    Alert(Arc<AlertPlugin>),
}

macro_rules! each {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            AnyPlugin::Generator($p) => $e,
            AnyPlugin::Optimizer($p) => $e,
            AnyPlugin::Alert($p) => $e,
        }
    };
}

impl AnyPlugin {
    pub fn load(
        section: &PluginSection,
        base_dir: &Path,
        config: &Config,
        engine: &Arc<PluginEngine>,
    ) -> Result<AnyPlugin, String> {
        let rt = &config.plugin_runtime;
        let engine = engine.clone();
        Ok(match section.kind {
            PluginKind::OperationGenerator => AnyPlugin::Generator(Arc::new(
                GeneratorPlugin::load(section, base_dir, rt, engine)?,
            )),
            PluginKind::Optimizer => AnyPlugin::Optimizer(Arc::new(OptimizerPlugin::load(
                section, base_dir, rt, engine,
            )?)),
            PluginKind::AlertRule => {
                AnyPlugin::Alert(Arc::new(AlertPlugin::load(section, base_dir, rt, engine)?))
            }
        })
    }

    pub fn name(&self) -> &str {
        each!(self, p => &p.name)
    }

    pub fn kind(&self) -> PluginKind {
        each!(self, p => p.kind())
    }

    pub fn path(&self) -> &Path {
        each!(self, p => &p.path)
    }

    pub fn view(&self) -> PluginView {
        each!(self, p => p.view())
    }

    pub fn reload(&self, force: bool) -> Result<Reloaded, String> {
        each!(self, p => p.reload(force))
    }

    fn same_as(&self, section: &PluginSection, base_dir: &Path) -> bool {
        each!(self, p => p.same_as(section, base_dir))
    }
}

/// The plugins of one config.
#[derive(Clone, Default)]
pub struct PluginSet {
    plugins: Vec<AnyPlugin>,
}

impl PluginSet {
    /// Loads every `[[plugins]]` entry. Plugins of `previous` whose file
    /// content and settings are unchanged are kept as they are, instance and
    /// counters included. Errors are `(index in plugins, reason)`.
    pub fn load(
        config: &Config,
        base_dir: &Path,
        engine: &EngineSlot,
        previous: Option<&PluginSet>,
    ) -> Result<PluginSet, Vec<(usize, String)>> {
        let mut plugins = Vec::new();
        let mut errors = Vec::new();
        for (i, section) in config.plugins.iter().enumerate() {
            let kept = previous
                .and_then(|p| p.get(&section.name))
                .filter(|p| p.same_as(section, base_dir))
                .cloned();
            let load = || {
                let engine = engine.get().map_err(|e| format!("{e:#}"))?;
                AnyPlugin::load(section, base_dir, config, &engine)
            };
            match kept.map(Ok).unwrap_or_else(load) {
                Ok(p) => plugins.push(p),
                Err(e) => errors.push((i, e)),
            }
        }
        if errors.is_empty() {
            Ok(PluginSet { plugins })
        } else {
            Err(errors)
        }
    }

    /// Loads the plugins of a loaded config; failures are config errors
    /// naming the entry, e.g. `plugins[1].path: cannot load plugin "x": …`.
    pub fn load_config(
        loaded: &Loaded,
        engine: &EngineSlot,
        previous: Option<&PluginSet>,
    ) -> Result<PluginSet, ConfigErrors> {
        let base_dir = loaded.source.base_dir();
        PluginSet::load(&loaded.config, &base_dir, engine, previous).map_err(|errors| {
            ConfigErrors(
                errors
                    .into_iter()
                    .map(|(i, reason)| {
                        let name = &loaded.config.plugins[i].name;
                        loaded.error_at(
                            &format!("plugins[{i}].path"),
                            format!("cannot load plugin \"{name}\": {reason}"),
                        )
                    })
                    .collect(),
            )
        })
    }

    pub fn get(&self, name: &str) -> Option<&AnyPlugin> {
        self.plugins.iter().find(|p| p.name() == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &AnyPlugin> {
        self.plugins.iter()
    }

    pub fn alerts(&self) -> impl Iterator<Item = &Arc<AlertPlugin>> {
        self.plugins.iter().filter_map(|p| match p {
            AnyPlugin::Alert(a) => Some(a),
            _ => None,
        })
    }

    pub fn optimizers(&self) -> impl Iterator<Item = &Arc<OptimizerPlugin>> {
        self.plugins.iter().filter_map(|p| match p {
            AnyPlugin::Optimizer(o) => Some(o),
            _ => None,
        })
    }

    pub fn generator(&self, name: &str) -> Option<&Arc<GeneratorPlugin>> {
        match self.get(name)? {
            AnyPlugin::Generator(g) => Some(g),
            _ => None,
        }
    }

    pub fn views(&self) -> Vec<PluginView> {
        self.plugins.iter().map(AnyPlugin::view).collect()
    }

    /// Files to watch for hot swaps.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.plugins
            .iter()
            .map(|p| p.path().to_path_buf())
            .collect()
    }
}
