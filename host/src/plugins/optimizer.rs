//! Optimizer plugins: `decide(snapshot, state)`. Policy on failure: the
//! caller keeps the last good parameters (nothing is applied).

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::optimize::Decision;
use super::bindings::optimizer_world::{Optimizer, OptimizerPre};
use super::bindings::types::Snapshot as PluginSnapshot;
use super::bindings::v0_1::optimizer_world as v0_1;
use super::compat::{self, Versioned};
use super::host_state::HostState;
use super::plugin::{InitArgs, Kind, Plugin, PluginFailure, at_most};
use crate::config::PluginKind;

pub struct OptimizerKind;

impl Kind for OptimizerKind {
    const KIND: PluginKind = PluginKind::Optimizer;
    type Pre = Versioned<OptimizerPre<HostState>, v0_1::OptimizerPre<HostState>>;
    type Bindings = Versioned<Optimizer, v0_1::Optimizer>;

    fn prepare(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        Versioned::prepare(pre, OptimizerPre::new, v0_1::OptimizerPre::new)
    }

    fn init(
        b: &Self::Bindings,
        store: &mut Store<HostState>,
        args: &InitArgs<'_>,
    ) -> wasmtime::Result<Result<(), String>> {
        match b {
            Versioned::Current(b) => b
                .switchyard_plugins_optimize()
                .call_init(store, args.config),
            Versioned::V0_1(b) => b
                .switchyard_plugins_optimize()
                .call_init(store, args.config),
        }
    }
}

pub type OptimizerPlugin = Plugin<OptimizerKind>;

impl Plugin<OptimizerKind> {
    /// One decision. `state` is the previous decision's state; the caller
    /// keeps it, so it survives hot swaps by construction.
    pub fn decide(
        &self,
        snapshot: &PluginSnapshot,
        state: &[u8],
    ) -> Result<Decision, PluginFailure> {
        self.call(
            |store, b| match b {
                Versioned::Current(b) => b
                    .switchyard_plugins_optimize()
                    .call_decide(store, snapshot, state),
                Versioned::V0_1(b) => b
                    .switchyard_plugins_optimize()
                    .call_decide(store, &compat::snapshot(snapshot), state)
                    .map(compat::decision),
            },
            |d: &Decision| {
                at_most("adjustments", d.adjustments.len(), 10_000)?;
                at_most("bytes of state", d.state.len(), 1 << 20)?;
                at_most("bytes of reason", d.reason.len(), 16 << 10)
            },
        )
    }
}
