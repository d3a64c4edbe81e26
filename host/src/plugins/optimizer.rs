//! Optimizer plugins: `decide(snapshot, state)`. Policy on failure: the
//! caller keeps the last good parameters (nothing is applied).

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::optimize::Decision;
use super::bindings::optimizer_world::{Optimizer, OptimizerPre};
use super::bindings::types::Snapshot as PluginSnapshot;
use super::host_state::HostState;
use super::plugin::{InitArgs, Kind, Plugin, PluginFailure, at_most};
use crate::config::PluginKind;

pub struct OptimizerKind;

impl Kind for OptimizerKind {
    const KIND: PluginKind = PluginKind::Optimizer;
    type Pre = OptimizerPre<HostState>;
    type Bindings = Optimizer;

    fn prepare(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        OptimizerPre::new(pre)
    }

    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Optimizer> {
        pre.instantiate(store)
    }

    fn init(
        b: &Optimizer,
        store: &mut Store<HostState>,
        args: &InitArgs<'_>,
    ) -> wasmtime::Result<Result<(), String>> {
        b.switchyard_plugins_optimize()
            .call_init(store, args.config)
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
            |store, b| {
                b.switchyard_plugins_optimize()
                    .call_decide(store, snapshot, state)
            },
            |d: &Decision| {
                at_most("adjustments", d.adjustments.len(), 10_000)?;
                at_most("bytes of state", d.state.len(), 1 << 20)?;
                at_most("bytes of reason", d.reason.len(), 16 << 10)
            },
        )
    }
}
