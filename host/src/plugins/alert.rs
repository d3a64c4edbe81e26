//! Alert-rule plugins: `describe` and `evaluate`. Policy on failure: fail
//! open, and report a synthetic `plugin-failed` finding so the failure itself
//! is alerted on.

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::alert::{Finding, RuleMeta};
use super::bindings::alert_world::{AlertRule, AlertRulePre};
use super::bindings::types::{Label, Severity, Snapshot as PluginSnapshot};
use super::host_state::HostState;
use super::plugin::{InitArgs, Kind, Plugin, PluginFailure, at_most};
use crate::config::PluginKind;

pub struct AlertKind;

/// Most findings one evaluation may return.
pub const MAX_FINDINGS: usize = 1000;

impl Kind for AlertKind {
    const KIND: PluginKind = PluginKind::AlertRule;
    type Pre = AlertRulePre<HostState>;
    type Bindings = AlertRule;

    fn prepare(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        AlertRulePre::new(pre)
    }

    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<AlertRule> {
        pre.instantiate(store)
    }

    fn init(
        b: &AlertRule,
        store: &mut Store<HostState>,
        args: &InitArgs<'_>,
    ) -> wasmtime::Result<Result<(), String>> {
        let api = b.switchyard_plugins_alert();
        if let Err(reason) = api.call_init(&mut *store, args.config)? {
            return Ok(Err(reason));
        }
        // Self-check: a rule must be able to describe itself.
        api.call_describe(&mut *store)?;
        Ok(Ok(()))
    }
}

pub type AlertPlugin = Plugin<AlertKind>;

impl Plugin<AlertKind> {
    /// The rule's metadata. Runs before every evaluation; its success does
    /// not clear earlier failures of `evaluate`.
    pub fn describe(&self) -> Result<RuleMeta, PluginFailure> {
        self.call_beside(
            |store, b| b.switchyard_plugins_alert().call_describe(store),
            |_| Ok(()),
        )
    }

    /// One evaluation. Convert the snapshot once per round with
    /// `PluginSnapshot::from(&snapshot)` and hand it to every rule.
    pub fn evaluate(&self, snapshot: &PluginSnapshot) -> Result<Vec<Finding>, PluginFailure> {
        self.call(
            |store, b| b.switchyard_plugins_alert().call_evaluate(store, snapshot),
            |findings: &Vec<Finding>| {
                at_most("findings", findings.len(), MAX_FINDINGS)?;
                let bytes: usize = findings.iter().map(|f| f.key.len() + f.summary.len()).sum();
                at_most("bytes of keys and summaries", bytes, 1 << 20)
            },
        )
    }

    /// Evaluates, failing open: a failed evaluation yields one active
    /// `plugin-failed` finding describing the failure instead.
    pub fn evaluate_or_report(&self, snapshot: &PluginSnapshot) -> Vec<Finding> {
        self.evaluate(snapshot)
            .unwrap_or_else(|failure| vec![plugin_failed(&failure)])
    }
}

/// The synthetic finding raised when a rule cannot be evaluated.
pub fn plugin_failed(failure: &PluginFailure) -> Finding {
    Finding {
        key: "plugin-failed".into(),
        active: true,
        severity: Severity::High,
        value: 1.0,
        threshold: 0.0,
        labels: vec![
            Label {
                key: "plugin".into(),
                value: failure.plugin.to_string(),
            },
            Label {
                key: "cause".into(),
                value: failure.cause.as_str().into(),
            },
        ],
        summary: format!(
            "alert rule {} could not be evaluated: {}",
            failure.plugin, failure.message
        ),
    }
}
