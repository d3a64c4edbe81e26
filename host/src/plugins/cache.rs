//! On-disk cache of compiled components, keyed by the content hash of the
//! `.wasm` and the engine's compatibility hash (so a new Switchyard or a
//! different engine config never reuses stale code).
//!
//! An entry is `MAGIC || sha256(artifact) || artifact`. The checksum is
//! verified before wasmtime deserializes, so a truncated or corrupted entry is
//! a miss (and is overwritten), never an error and never unsafe.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"SYCWASM1";

#[derive(Debug)]
pub struct CompiledCache {
    dir: PathBuf,
    engine_key: String,
}

/// Where a compiled component came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
}

pub fn content_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl CompiledCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        CompiledCache {
            dir,
            engine_key: format!("{:016x}", h.finish()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_path(&self, content_hash: &str) -> PathBuf {
        self.dir.join(format!(
            "{}-{}.cwasm",
            &content_hash[..32.min(content_hash.len())],
            self.engine_key
        ))
    }

    /// A cached compilation of the component with this content hash, if a
    /// valid one exists.
    pub fn load(&self, engine: &Engine, content_hash: &str) -> Option<Component> {
        let path = self.entry_path(content_hash);
        let data = fs::read(&path).ok()?;
        let checked = (|| {
            let rest = data.strip_prefix(MAGIC.as_slice())?;
            let (sum, artifact) = rest.split_at_checked(32)?;
            (Sha256::digest(artifact).as_slice() == sum).then_some(artifact)
        })();
        let Some(artifact) = checked else {
            tracing::warn!(
                "compiled-plugin cache entry {} is corrupt; recompiling",
                path.display()
            );
            return None;
        };
        // SAFETY: the artifact was written by `store` below from
        // `Component::serialize` with this engine's compatibility hash in its
        // name, and its checksum matches, so it is exactly what wasmtime
        // produced. wasmtime checks version and configuration compatibility
        // itself as well.
        match unsafe { Component::deserialize(engine, artifact) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(
                    "compiled-plugin cache entry {} unusable ({e}); recompiling",
                    path.display()
                );
                None
            }
        }
    }

    /// Stores a compilation; failures only cost the next start a compile.
    pub fn store(&self, content_hash: &str, component: &Component) {
        let result = (|| -> anyhow::Result<()> {
            let artifact = component.serialize()?;
            fs::create_dir_all(&self.dir)?;
            let path = self.entry_path(content_hash);
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let mut f = fs::File::create(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&Sha256::digest(&artifact))?;
            f.write_all(&artifact)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(
                "cannot write compiled-plugin cache in {}: {e}",
                self.dir.display()
            );
        }
    }
}
