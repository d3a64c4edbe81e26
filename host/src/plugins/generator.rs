//! Operation-generator plugins: `next-batch`, `observe`, `save-state`.
//! Policy on failure: fail closed; the operations that could not be produced
//! count as failed. The generator's saved state is handed to the next
//! version on a hot swap.

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::generate::{BatchContext, OpKind, OpResult, Operation};
use super::bindings::generator_world::{OperationGenerator, OperationGeneratorPre};
use super::bindings::v0_1::generator_world as v0_1;
use super::compat::{self, Versioned};
use super::host_state::HostState;
use super::plugin::{InitArgs, Kind, Plugin, PluginFailure, at_most};
use crate::config::PluginKind;

pub struct GeneratorKind;

impl OpKind {
    /// The kind as the contract spells it, and as reports name it.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Create => "create",
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::Delete => "delete",
            OpKind::Custom => "custom",
        }
    }
}

/// Largest request body a generated operation may carry.
pub const MAX_BODY: usize = 16 << 20;

impl Kind for GeneratorKind {
    const KIND: PluginKind = PluginKind::OperationGenerator;
    type Pre = Versioned<OperationGeneratorPre<HostState>, v0_1::OperationGeneratorPre<HostState>>;
    type Bindings = Versioned<OperationGenerator, v0_1::OperationGenerator>;

    fn prepare(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        Versioned::prepare(
            pre,
            OperationGeneratorPre::new,
            v0_1::OperationGeneratorPre::new,
        )
    }

    fn init(
        b: &Self::Bindings,
        store: &mut Store<HostState>,
        args: &InitArgs<'_>,
    ) -> wasmtime::Result<Result<(), String>> {
        let (config, seed, state) = (args.config, args.seed, args.handoff.as_deref());
        match b {
            Versioned::Current(b) => b
                .switchyard_plugins_generate()
                .call_init(store, config, seed, state),
            Versioned::V0_1(b) => b
                .switchyard_plugins_generate()
                .call_init(store, config, seed, state),
        }
    }

    fn handoff(
        b: &Self::Bindings,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        save_state(store, b).map(Some)
    }
}

fn save_state(
    store: &mut Store<HostState>,
    b: &<GeneratorKind as Kind>::Bindings,
) -> wasmtime::Result<Vec<u8>> {
    match b {
        Versioned::Current(b) => b.switchyard_plugins_generate().call_save_state(store),
        Versioned::V0_1(b) => b.switchyard_plugins_generate().call_save_state(store),
    }
}

pub type GeneratorPlugin = Plugin<GeneratorKind>;

impl Plugin<GeneratorKind> {
    pub fn next_batch(&self, ctx: BatchContext, max: u32) -> Result<Vec<Operation>, PluginFailure> {
        self.call(
            |store, b| match b {
                Versioned::Current(b) => b
                    .switchyard_plugins_generate()
                    .call_next_batch(store, ctx, max),
                Versioned::V0_1(b) => b
                    .switchyard_plugins_generate()
                    .call_next_batch(store, compat::batch_context(ctx), max)
                    .map(|ops| ops.into_iter().map(compat::operation).collect()),
            },
            |ops: &Vec<Operation>| {
                at_most("operations", ops.len(), max as usize)?;
                match ops
                    .iter()
                    .find(|o| o.body.as_ref().is_some_and(|b| b.len() > MAX_BODY))
                {
                    Some(o) => Err(format!(
                        "operation {} {} has a body over {MAX_BODY} bytes",
                        o.method, o.path
                    )),
                    None => Ok(()),
                }
            },
        )
    }

    pub fn observe(&self, results: &[OpResult]) -> Result<(), PluginFailure> {
        self.call(
            |store, b| match b {
                Versioned::Current(b) => {
                    b.switchyard_plugins_generate().call_observe(store, results)
                }
                Versioned::V0_1(b) => {
                    let results: Vec<_> = results.iter().map(compat::op_result).collect();
                    b.switchyard_plugins_generate()
                        .call_observe(store, &results)
                }
            },
            |_| Ok(()),
        )
    }

    pub fn save_state(&self) -> Result<Vec<u8>, PluginFailure> {
        self.call(save_state, |s: &Vec<u8>| {
            at_most("bytes of state", s.len(), 64 << 20)
        })
    }
}
