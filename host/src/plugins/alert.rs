//! Alert-rule plugins: `describe` and `evaluate`. Policy on failure: fail
//! open, and report a synthetic `plugin-failed` finding so the failure itself
//! is alerted on.

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::alert::{Finding, RuleMeta};
use super::bindings::alert_world::{AlertRule, AlertRulePre};
use super::bindings::types::{Label, Severity, Snapshot as PluginSnapshot};
use super::bindings::v0_1::alert_world as v0_1;
use super::compat::{self, Versioned};
use super::host_state::HostState;
use super::plugin::{InitArgs, Kind, Plugin, PluginFailure, at_most};
use crate::config::PluginKind;

pub struct AlertKind;

/// Most findings one evaluation may return.
pub const MAX_FINDINGS: usize = 1000;

impl Kind for AlertKind {
    const KIND: PluginKind = PluginKind::AlertRule;
    type Pre = Versioned<AlertRulePre<HostState>, v0_1::AlertRulePre<HostState>>;
    type Bindings = Versioned<AlertRule, v0_1::AlertRule>;

    fn prepare(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        Versioned::prepare(pre, AlertRulePre::new, v0_1::AlertRulePre::new)
    }

    fn init(
        b: &Self::Bindings,
        store: &mut Store<HostState>,
        args: &InitArgs<'_>,
    ) -> wasmtime::Result<Result<(), String>> {
        let init = match b {
            Versioned::Current(b) => b
                .switchyard_plugins_alert()
                .call_init(&mut *store, args.config)?,
            Versioned::V0_1(b) => b
                .switchyard_plugins_alert()
                .call_init(&mut *store, args.config)?,
        };
        if let Err(reason) = init {
            return Ok(Err(reason));
        }
        // Self-check: a rule must be able to describe itself.
        describe(store, b)?;
        Ok(Ok(()))
    }
}

fn describe(
    store: &mut Store<HostState>,
    b: &<AlertKind as Kind>::Bindings,
) -> wasmtime::Result<RuleMeta> {
    match b {
        Versioned::Current(b) => b.switchyard_plugins_alert().call_describe(store),
        Versioned::V0_1(b) => b
            .switchyard_plugins_alert()
            .call_describe(store)
            .map(compat::rule_meta),
    }
}

pub type AlertPlugin = Plugin<AlertKind>;

impl Plugin<AlertKind> {
    /// The rule's metadata. Runs before every evaluation; its success does
    /// not clear earlier failures of `evaluate`.
    pub fn describe(&self) -> Result<RuleMeta, PluginFailure> {
        self.call_beside(describe, |_| Ok(()))
    }

    /// One evaluation. Convert the snapshot once per round with
    /// `PluginSnapshot::from(&snapshot)` and hand it to every rule.
    pub fn evaluate(&self, snapshot: &PluginSnapshot) -> Result<Vec<Finding>, PluginFailure> {
        self.call(
            |store, b| match b {
                Versioned::Current(b) => {
                    b.switchyard_plugins_alert().call_evaluate(store, snapshot)
                }
                Versioned::V0_1(b) => b
                    .switchyard_plugins_alert()
                    .call_evaluate(store, &compat::snapshot(snapshot))
                    .map(|f| f.into_iter().map(compat::finding).collect()),
            },
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
