//! On-disk cache of compiled components, keyed by the content hash of the
//! `.wasm` and the engine's compatibility hash (so a new Switchyard or a
//! different engine config never reuses stale code).
//!
//! An entry is `MAGIC || sha256(artifact) || artifact`. The checksum is
//! verified before wasmtime deserializes, so a truncated or corrupted entry is
//! a miss (and is overwritten), never an error and never unsafe.
//!
//! Beside it, [`FunctionCache`]: Cranelift's incremental cache, compiled
//! functions keyed by their IR. A new version of a plugin shares most of
//! its functions with the last (a Python or JavaScript plugin is an
//! interpreter of a few megabytes plus the author's code), so its
//! optimising compile redoes only what changed. It lives on disk, so a
//! version loaded from the component cache at start still speeds up the
//! compile of the next one.

use std::borrow::Cow;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"SYCWASM1";
const FUNCTION_MAGIC: &[u8; 8] = b"SYCFUNC1";

/// `MAGIC || sha256(payload) || payload`, the layout of both caches.
fn sealed(magic: &[u8; 8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + payload.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&Sha256::digest(payload));
    out.extend_from_slice(payload);
    out
}

/// The payload of `data` written by [`sealed`] with `magic`, when intact.
fn unsealed<'a>(magic: &[u8; 8], data: &'a [u8]) -> Option<&'a [u8]> {
    let rest = data.strip_prefix(magic.as_slice())?;
    let (sum, payload) = rest.split_at_checked(32)?;
    (Sha256::digest(payload).as_slice() == sum).then_some(payload)
}

/// Writes `data` to `path` through a temporary file and a rename, so a
/// reader never sees half an entry. Not synced: after a crash an entry may
/// be empty or short, which its checksum turns into a miss.
fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!(
        "tmp{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(data)?;
    fs::rename(&tmp, path)
}

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

    /// Whether an entry exists for this content hash (it may still turn
    /// out corrupt when loaded).
    pub fn has(&self, content_hash: &str) -> bool {
        self.entry_path(content_hash).is_file()
    }

    /// A cached compilation of the component with this content hash, if a
    /// valid one exists.
    pub fn load(&self, engine: &Engine, content_hash: &str) -> Option<Component> {
        let path = self.entry_path(content_hash);
        let data = fs::read(&path).ok()?;
        let Some(artifact) = unsealed(MAGIC, &data) else {
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
            write_atomically(&self.entry_path(content_hash), &sealed(MAGIC, &artifact))?;
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

/// Cranelift's incremental cache on disk: one sealed file per compiled
/// function under `functions/`, named by the hash of Cranelift's key (which
/// covers the function's IR and the compiler's settings). A missing,
/// corrupt or unwritable entry only means that function is compiled again.
#[derive(Debug)]
pub struct FunctionCache {
    dir: PathBuf,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl FunctionCache {
    pub fn new(cache_dir: &Path) -> Self {
        FunctionCache {
            dir: cache_dir.join("functions"),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn path(&self, key: &[u8]) -> PathBuf {
        let name = content_hash(key);
        self.dir.join(&name[..2]).join(&name[2..40])
    }

    /// Functions found and not found so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let found = fs::read(self.path(key)).ok().and_then(|mut data| {
            let header = data.len() - unsealed(FUNCTION_MAGIC, &data)?.len();
            data.drain(..header);
            Some(data)
        });
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Relaxed);
        found.map(Cow::Owned)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let path = self.path(key);
        let written = path
            .parent()
            .is_some_and(|dir| fs::create_dir_all(dir).is_ok())
            && write_atomically(&path, &sealed(FUNCTION_MAGIC, &value)).is_ok();
        if !written {
            tracing::debug!("cannot write {}", path.display());
        }
        written
    }
}
