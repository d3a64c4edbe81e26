//! Operation-generator plugins: `next-batch`, `observe`, `save-state`.
//! Policy on failure: fail closed; the operations that could not be produced
//! count as failed. The generator's saved state is handed to the next
//! version on a hot swap.

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::generate::{BatchContext, OpResult, Operation};
use super::bindings::generator_world::{OperationGenerator, OperationGeneratorPre};
use super::host_state::HostState;
use super::plugin::{InitArgs, Kind, Plugin, PluginFailure, at_most};
use crate::config::PluginKind;

pub struct GeneratorKind;

/// Largest request body a generated operation may carry.
pub const MAX_BODY: usize = 16 << 20;

impl Kind for GeneratorKind {
    const KIND: PluginKind = PluginKind::OperationGenerator;
    type Pre = OperationGeneratorPre<HostState>;
    type Bindings = OperationGenerator;

    fn prepare(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        OperationGeneratorPre::new(pre)
    }

    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<OperationGenerator> {
        pre.instantiate(store)
    }

    fn init(
        b: &OperationGenerator,
        store: &mut Store<HostState>,
        args: &InitArgs<'_>,
    ) -> wasmtime::Result<Result<(), String>> {
        b.switchyard_plugins_generate().call_init(
            store,
            args.config,
            args.seed,
            args.handoff.as_deref(),
        )
    }

    fn handoff(
        b: &OperationGenerator,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        b.switchyard_plugins_generate()
            .call_save_state(store)
            .map(Some)
    }
}

pub type GeneratorPlugin = Plugin<GeneratorKind>;

impl Plugin<GeneratorKind> {
    pub fn next_batch(&self, ctx: BatchContext, max: u32) -> Result<Vec<Operation>, PluginFailure> {
        self.call(
            |store, b| {
                b.switchyard_plugins_generate()
                    .call_next_batch(store, ctx, max)
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
            |store, b| b.switchyard_plugins_generate().call_observe(store, results),
            |_| Ok(()),
        )
    }

    pub fn save_state(&self) -> Result<Vec<u8>, PluginFailure> {
        self.call(
            |store, b| b.switchyard_plugins_generate().call_save_state(store),
            |s: &Vec<u8>| at_most("bytes of state", s.len(), 64 << 20),
        )
    }
}
