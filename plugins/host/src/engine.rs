//! One wasmtime `Engine` for every plugin: compilation with an on-disk cache, the pooling
//! allocator, and calls with limits (fuel, a wall-clock deadline driven by epochs, a memory
//! cap, output caps, a bound on instances alive at once), each on an instance that serves up
//! to `plugins.reuse` calls of one template version (see [`crate::pool`]).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hookgate_core::config::PluginLimits;
use sha2::{Digest, Sha256};
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, HasSelf, InstancePre, Lift, Linker, Lower,
};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimitsBuilder, Trap,
    UpdateDeadline,
};

use crate::bindings::hookgate::plugin::types::{Header, OutgoingRequest, PluginError, PluginInfo, TransformOutput};
use crate::bindings::{Plugin, PluginPre};
use crate::cache::CodeCache;
use crate::pool::{IdleSet, InstancePool, Lease, Leased, Live};
use crate::state::{CallContext, CallState};

/// Linear memory kept resident in a pooled slot between calls (a Rust guest's stack and a
/// small heap).
const RESIDENT_MEMORY: usize = 2 << 20;

/// Linear memories one plugin instance may have (each within `plugins.memory_bytes`).
const MEMORIES_PER_INSTANCE: u32 = 4;

/// The address space of one linear memory when the process can map it: all a 32-bit
/// address reaches (see [`PluginEngine::new`]).
const GUARDED_RESERVATION: u64 = 4 << 30;

/// How often the epoch advances: the resolution of the wall-clock limit.
const EPOCH_TICK: Duration = Duration::from_millis(2);

/// A plugin compiled and linked, ready to instantiate.
pub struct LoadedPlugin {
    /// The file stem: the name templates use.
    pub name: String,
    /// SHA-256 of the `.wasm` file, hex.
    pub sha256: String,
    /// Bytes of the `.wasm` file.
    pub size: usize,
    /// Whether the compiled code came from the on-disk cache.
    pub from_cache: bool,
    /// This version, among every plugin loaded: instances are never shared between two.
    id: u64,
    pre: InstancePre<CallState>,
    exports: Exports,
}

/// The contract's exports of one plugin, found once when it loads.
struct Exports {
    describe: ComponentExportIndex,
    authorize: ComponentExportIndex,
    transform: ComponentExportIndex,
}

impl fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPlugin").field("name", &self.name).field("sha256", &self.sha256).finish()
    }
}

/// Why a plugin call failed. Its `Display` names the plugin.
#[derive(Debug, Clone)]
pub struct CallError {
    pub plugin: String,
    pub kind: CallErrorKind,
}

#[derive(Debug, Clone)]
pub enum CallErrorKind {
    /// The plugin returned an error itself.
    Plugin(PluginError),
    /// A limit stopped it: time, fuel, memory, output size.
    Limit(String),
    /// It trapped (a panic, `unreachable`, a stack overflow...).
    Trap(String),
    /// It returned something the host cannot use.
    BadOutput(String),
    /// It could not be instantiated.
    Instantiate(String),
    /// It asked the host for something its template does not grant (a signing key).
    Refused(String),
}

impl CallError {
    fn new(plugin: &str, kind: CallErrorKind) -> Self {
        Self { plugin: plugin.to_string(), kind }
    }

    /// Whether trying again later may help: only when the plugin says so.
    pub fn retryable(&self) -> bool {
        matches!(&self.kind, CallErrorKind::Plugin(e) if e.retryable)
    }
}

impl fmt::Display for CallErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plugin(e) => f.write_str(&e.message),
            Self::Limit(why) => write!(f, "stopped: {why}"),
            Self::Trap(why) => write!(f, "trapped: {why}"),
            Self::BadOutput(why) => write!(f, "returned bad output: {why}"),
            Self::Instantiate(why) => write!(f, "could not start: {why}"),
            Self::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin `{}`: {}", self.plugin, self.kind)
    }
}

impl std::error::Error for CallError {}

pub struct PluginEngine {
    engine: Engine,
    linker: Linker<CallState>,
    limits: PluginLimits,
    cache: Option<CodeCache>,
    idle: Arc<IdleSet>,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl PluginEngine {
    /// An engine with `limits`; compiled plugins are cached in `cache_dir` when given and
    /// safe to use (see [`crate::cache`]: otherwise a warning says why, and every plugin is
    /// compiled without a cache).
    pub fn new(limits: PluginLimits, cache_dir: Option<PathBuf>) -> Result<Self, String> {
        let cache = cache_dir.and_then(|dir| match CodeCache::open(&dir) {
            Ok(cache) => Some(cache),
            Err(why) => {
                tracing::warn!("not using the compiled plugin cache {}: {why}", dir.display());
                None
            }
        });
        let instances = limits.max_instances.max(1);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(instances)
            .total_core_instances(instances * 8)
            // A Rust guest has one linear memory, a JavaScript one built with QuickJS three
            // (the engine's, the WASI adapter's, the bindings'); each is a slot of address
            // space, not memory, until it is used.
            .total_memories(instances * MEMORIES_PER_INSTANCE)
            .max_memories_per_component(MEMORIES_PER_INSTANCE)
            .total_tables(instances * 8)
            .total_stacks(instances)
            .max_memory_size(limits.memory_bytes)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20)
            // Reset reused slots with memset (or a scan of resident pages) instead of
            // madvise: a fresh instance per call then costs no page faults.
            .linear_memory_keep_resident(RESIDENT_MEMORY.min(limits.memory_bytes))
            .table_keep_resident(64 * 1024)
            .pagemap_scan(wasmtime::Enabled::Auto)
            .decommit_batch_size(16);
        let config = |reservation: u64| {
            let mut config = Config::new();
            config
                .wasm_component_model(true)
                .epoch_interruption(true)
                .consume_fuel(true)
                .max_wasm_stack(512 * 1024)
                .memory_reservation(reservation)
                .allocation_strategy(InstanceAllocationStrategy::Pooling(pool.clone()));
            config
        };
        // 4 GiB of address space (not memory) per linear memory, with the default guard
        // after it: no 32-bit address can leave it, so compiled code needs no bounds check
        // on loads and stores. An interpreter guest (Python, JavaScript) is mostly loads and
        // stores: its calls cost 10-15% less than with a reservation of `memory_bytes`
        // (`cargo bench --bench plugins -- per-call`). The pool reserves it for
        // `max_instances` x 4 memories: 1 TiB of the 128 TiB a process can map by default.
        // Where a process may map less (`ulimit -v`, valgrind), the reservation is
        // `memory_bytes` and the code checks bounds. The compiled cache keeps the two apart
        // (its key has the engine's compatibility hash).
        let engine = Engine::new(&config(GUARDED_RESERVATION)).or_else(|e| {
            tracing::warn!(
                "plugins: cannot reserve 4 GiB of address space per plugin memory ({e}); plugin code will check \
                 its memory accesses, which costs some speed"
            );
            Engine::new(&config(limits.memory_bytes as u64 + (64 << 20)))
        });
        let engine = engine.map_err(|e| format!("cannot start the WASM engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        Plugin::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |state| state)
            .map_err(|e| format!("cannot link the host interface: {e}"))?;

        // The epoch ticker: drives the wall-clock limit. It stops when the engine is dropped.
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (weak, stop) = (engine.weak(), ticker_stop.clone());
        std::thread::Builder::new()
            .name("hookgate-plugin-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })
            .map_err(|e| format!("cannot start the epoch thread: {e}"))?;

        Ok(Self { engine, linker, idle: IdleSet::new(instances as usize), limits, cache, ticker_stop })
    }

    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    /// Compiles (or loads from the cache) and links a plugin. CPU-heavy: call it from a
    /// blocking thread.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<LoadedPlugin, String> {
        let sha256: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
        let (component, from_cache) = self.compile(&sha256, bytes)?;
        let mut linker = self.linker.clone();
        // Imports beyond the contract (a Rust guest's WASI runtime, say) link, but trap if
        // called: plugins get no files, sockets or environment.
        linker.define_unknown_imports_as_traps(&component).map_err(|e| format!("cannot link: {e}"))?;
        let instance_pre = linker.instantiate_pre(&component).map_err(|e| format!("cannot link: {e:#}"))?;
        // Checks every export against the contract, once; calls then look up only the
        // function they run.
        PluginPre::new(instance_pre.clone())
            .map_err(|e| format!("does not implement the contract hookgate:plugin@0.1.0 (world `plugin`): {e:#}"))?;
        let export =
            |name: &str| component.get_export_index(None, name).ok_or_else(|| format!("does not export `{name}`"));
        let exports =
            Exports { describe: export("describe")?, authorize: export("authorize")?, transform: export("transform")? };
        Ok(LoadedPlugin {
            name: name.to_string(),
            sha256,
            size: bytes.len(),
            from_cache,
            id: crate::pool::next_id(),
            pre: instance_pre,
            exports,
        })
    }

    /// The compiled component, from the cache when it has one for these bytes and this
    /// engine that verifies (see [`crate::cache`]); otherwise compiled and cached.
    fn compile(&self, sha256: &str, bytes: &[u8]) -> Result<(Component, bool), String> {
        let engine_hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.engine.precompile_compatibility_hash().hash(&mut h);
            h.finish()
        };
        if let Some(cache) = &self.cache {
            match cache.read(sha256, engine_hash) {
                Ok(None) => {}
                Ok(Some(code)) => {
                    // SAFETY: `code` is the very bytes whose tag was just verified with the
                    // install's key, which only this gateway holds: it is what `serialize`
                    // below produced for this wasm hash and this engine. wasmtime also checks
                    // the header (engine and version) before using it.
                    #[allow(unsafe_code)]
                    let loaded = unsafe { Component::deserialize(&self.engine, &code) };
                    match loaded {
                        Ok(component) => return Ok((component, true)),
                        Err(e) => tracing::warn!(
                            "ignoring the compiled cache {}: {e}",
                            cache.path(sha256, engine_hash).display()
                        ),
                    }
                }
                Err(why) => tracing::warn!(
                    "not loading the compiled cache {}: {why}; compiling the plugin again",
                    cache.path(sha256, engine_hash).display()
                ),
            }
        }
        let component =
            Component::new(&self.engine, bytes).map_err(|e| format!("not a valid WebAssembly component: {e:#}"))?;
        if let Some(cache) = &self.cache {
            let written = component
                .serialize()
                .map_err(|e| e.to_string())
                .and_then(|code| cache.write(sha256, engine_hash, &code));
            if let Err(e) = written {
                tracing::warn!("cannot cache the compiled plugin in {}: {e}", cache.dir().display());
            }
        }
        Ok((component, false))
    }

    /// A store for `ctx`'s calls, with the limits of one instance.
    fn store(&self, ctx: Arc<CallContext>) -> Store<CallState> {
        let limits = StoreLimitsBuilder::new().memory_size(self.limits.memory_bytes).trap_on_grow_failure(true).build();
        let mut store = Store::new(&self.engine, CallState::new(limits, ctx, self.limits.timeout));
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_callback(|ctx| {
            Ok(if ctx.data().overdue() { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
        });
        store
    }

    /// A call starts: full fuel, the whole time budget, per-call counts from zero.
    fn begin(&self, store: &mut Store<CallState>) -> Result<(), String> {
        store.set_fuel(self.limits.fuel).map_err(|e| e.to_string())?;
        store.set_epoch_deadline(1);
        store.data_mut().begin();
        Ok(())
    }

    /// A pool of instances for one template version's calls (`ctx`), each serving up to
    /// `plugins.reuse` calls.
    pub fn pool(&self, ctx: Arc<CallContext>) -> InstancePool {
        InstancePool::new(self.idle.clone(), ctx, self.limits.reuse)
    }

    /// A pool that keeps nothing: every call on a fresh instance.
    fn fresh(&self, ctx: Arc<CallContext>) -> InstancePool {
        InstancePool::new(self.idle.clone(), ctx, 1)
    }

    /// An idle instance of `plugin` from `pool`, or a new one (instantiating runs on the
    /// call's fuel, within [`crate::state::START_TIMEOUT`]; the call's time starts after).
    async fn checkout(&self, plugin: &LoadedPlugin, pool: &InstancePool) -> Result<Live, CallError> {
        let fail = |kind| CallError::new(&plugin.name, kind);
        if let Some(mut live) = pool.take(plugin.id) {
            self.begin(&mut live.store).map_err(|e| fail(CallErrorKind::Instantiate(e)))?;
            return Ok(live);
        }
        let permit = self.idle.permit().await.map_err(|e| fail(CallErrorKind::Instantiate(e)))?;
        let mut store = self.store(pool.ctx().clone());
        self.begin(&mut store).map_err(|e| fail(CallErrorKind::Instantiate(e)))?;
        store.data_mut().begin_start();
        let instance = plugin.pre.instantiate_async(&mut store).await.map_err(|e| fail(self.classify(&e, true)))?;
        store.data_mut().begin();
        Ok(Live::new(store, instance, plugin.id, permit))
    }

    /// Calls `export` with `params` on an instance of `plugin` from `pool`, mapping every
    /// failure to a [`CallError`] (the instance is then dropped).
    async fn run<'p, P, R>(
        &self,
        plugin: &LoadedPlugin,
        pool: &'p InstancePool,
        export: &ComponentExportIndex,
        params: P,
    ) -> Result<Leased<'p, R>, CallError>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        let fail = |kind| CallError::new(&plugin.name, kind);
        let mut live = self.checkout(plugin, pool).await?;
        let func = live
            .instance
            .get_typed_func::<P, R>(&mut live.store, export)
            .map_err(|e| fail(CallErrorKind::Instantiate(first_line(&format!("{e:#}")))))?;
        let result = func.call_async(&mut live.store, params).await;
        let state = live.store.data_mut();
        state.end();
        // A refusal fails the call whatever the plugin did with the error it was given.
        if let Some(why) = state.refused.take() {
            return Err(fail(CallErrorKind::Refused(why)));
        }
        let output = result.map_err(|e| fail(self.classify(&e, false)))?;
        Ok(Leased { output, lease: Lease::new(pool, live) })
    }

    fn classify(&self, error: &wasmtime::Error, instantiating: bool) -> CallErrorKind {
        let limit = |what: String| CallErrorKind::Limit(what);
        let trap = error.chain().find_map(|e| e.downcast_ref::<Trap>());
        match trap {
            Some(Trap::Interrupt) if instantiating => limit(format!(
                "took longer than {} to start",
                hookgate_core::duration::format_duration(crate::state::START_TIMEOUT)
            )),
            Some(Trap::Interrupt) => limit(format!(
                "ran longer than {} (plugins.timeout)",
                hookgate_core::duration::format_duration(self.limits.timeout)
            )),
            Some(Trap::OutOfFuel) => limit(format!("used up its fuel ({} units, plugins.fuel)", self.limits.fuel)),
            Some(Trap::StackOverflow) => CallErrorKind::Trap("stack overflow (too deep a recursion)".into()),
            Some(trap) => {
                let text = format!("{error:#}");
                if text.contains("memory") && text.contains("limit")
                    || text.contains("forcing trap when growing memory")
                {
                    limit(format!(
                        "asked for more than {} bytes of memory (plugins.memory_bytes)",
                        self.limits.memory_bytes
                    ))
                } else {
                    CallErrorKind::Trap(trap.to_string())
                }
            }
            None => {
                let text = error.root_cause().to_string();
                if text.contains("forcing trap when growing memory") || text.contains("memory minimum size") {
                    limit(format!(
                        "asked for more than {} bytes of memory (plugins.memory_bytes)",
                        self.limits.memory_bytes
                    ))
                } else if let Some(import) = text.strip_prefix("unknown import: ") {
                    let import = import.split(' ').next().unwrap_or(import);
                    CallErrorKind::Trap(format!("called {import}, which plugins may not use (a Rust panic does)"))
                } else if instantiating {
                    CallErrorKind::Instantiate(first_line(&text))
                } else {
                    CallErrorKind::Trap(first_line(&text))
                }
            }
        }
    }

    /// What the plugin says about itself.
    pub async fn describe(&self, plugin: &LoadedPlugin) -> Result<PluginInfo, CallError> {
        let pool = self.fresh(Arc::new(CallContext::new(&plugin.name, "")));
        let (info,) = self.run::<(), (PluginInfo,)>(plugin, &pool, &plugin.exports.describe, ()).await?.keep();
        Ok(info)
    }

    /// The headers the plugin adds to `request`, from a fresh instance.
    pub async fn authorize(
        &self,
        plugin: &LoadedPlugin,
        ctx: Arc<CallContext>,
        request: &OutgoingRequest,
        config: &str,
    ) -> Result<Vec<Header>, CallError> {
        Ok(self.authorize_in(plugin, &self.fresh(ctx), request, config).await?.output)
    }

    /// The headers the plugin adds to `request`, from an instance of `pool`: keep the lease
    /// once they are found good, to reuse the instance.
    pub async fn authorize_in<'p>(
        &self,
        plugin: &LoadedPlugin,
        pool: &'p InstancePool,
        request: &OutgoingRequest,
        config: &str,
    ) -> Result<Leased<'p, Vec<Header>>, CallError> {
        let Leased { output: (result,), lease } = self
            .run::<_, (Result<Vec<Header>, PluginError>,)>(plugin, pool, &plugin.exports.authorize, (request, config))
            .await?;
        let headers = result.map_err(|e| plugin_error(&plugin.name, e))?;
        let size = headers_size(&headers);
        if size > self.limits.max_output_bytes.min(MAX_AUTH_BYTES) || headers.len() > MAX_HEADERS {
            return Err(CallError::new(
                &plugin.name,
                CallErrorKind::Limit(format!(
                    "returned {} headers of {size} bytes (at most {MAX_HEADERS} headers, 64 KiB, counting {HEADER_OVERHEAD} bytes a header)",
                    headers.len()
                )),
            ));
        }
        Ok(Leased { output: headers, lease })
    }

    /// The requests the plugin makes of a payload, from a fresh instance.
    pub async fn transform(
        &self,
        plugin: &LoadedPlugin,
        ctx: Arc<CallContext>,
        payload: &[u8],
        config: &str,
    ) -> Result<TransformOutput, CallError> {
        Ok(self.transform_in(plugin, &self.fresh(ctx), payload, config).await?.output)
    }

    /// The requests the plugin makes of a payload, from an instance of `pool`: keep the
    /// lease once they are found good, to reuse the instance.
    pub async fn transform_in<'p>(
        &self,
        plugin: &LoadedPlugin,
        pool: &'p InstancePool,
        payload: &[u8],
        config: &str,
    ) -> Result<Leased<'p, TransformOutput>, CallError> {
        let Leased { output: (result,), lease } = self
            .run::<_, (Result<TransformOutput, PluginError>,)>(
                plugin,
                pool,
                &plugin.exports.transform,
                (payload, config),
            )
            .await?;
        let output = result.map_err(|e| plugin_error(&plugin.name, e))?;
        if let Some((i, r)) = output.requests.iter().enumerate().find(|(_, r)| r.headers.len() > MAX_HEADERS) {
            return Err(CallError::new(
                &plugin.name,
                CallErrorKind::Limit(format!("request {i} has {} headers (at most {MAX_HEADERS})", r.headers.len())),
            ));
        }
        let size = output_size(&output);
        if size > self.limits.max_output_bytes {
            return Err(CallError::new(
                &plugin.name,
                CallErrorKind::Limit(format!(
                    "returned {} requests of {size} bytes, counting {REQUEST_OVERHEAD} bytes a request (plugins.max_output_bytes is {})",
                    output.requests.len(),
                    self.limits.max_output_bytes
                )),
            ));
        }
        Ok(Leased { output, lease })
    }
}

/// Headers one call may return (`authorize`, or one planned request of `transform`).
const MAX_HEADERS: usize = 64;
/// Bytes of the headers `authorize` may return (or `plugins.max_output_bytes` if smaller).
const MAX_AUTH_BYTES: usize = 64 * 1024;
/// What a header costs against the output caps besides its name and value, so that many
/// empty headers are not free.
const HEADER_OVERHEAD: usize = 32;
/// What a planned request costs against `plugins.max_output_bytes` besides its method, URL,
/// headers and body: its record, its job and its row are not free even when it is empty.
const REQUEST_OVERHEAD: usize = 256;
/// Bytes of a plugin's error message kept in a failure reason.
const MAX_ERROR_MESSAGE: usize = 1024;

/// A plugin's own error, its message escaped and capped: it becomes a failure reason shown
/// in records, the API and logs.
fn plugin_error(plugin: &str, e: PluginError) -> CallError {
    let message = crate::text::sanitize(&e.message, MAX_ERROR_MESSAGE);
    CallError::new(plugin, CallErrorKind::Plugin(PluginError { message, retryable: e.retryable }))
}

fn headers_size(headers: &[Header]) -> usize {
    headers.iter().map(|h| HEADER_OVERHEAD + h.name.len() + h.value.len()).sum()
}

/// What a transform's output counts against `plugins.max_output_bytes`.
fn output_size(output: &TransformOutput) -> usize {
    output
        .requests
        .iter()
        .map(|r| REQUEST_OVERHEAD + r.method.len() + r.url.len() + r.body.len() + headers_size(&r.headers))
        .sum()
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest components: an empty one, and one with a custom section (another hash).
    const EMPTY: &[u8] = b"\0asm\x0d\x00\x01\x00";
    const OTHER: &[u8] = b"\0asm\x0d\x00\x01\x00\x00\x04\x03abc";

    fn sha(bytes: &[u8]) -> String {
        Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
    }

    fn engine(cache: &std::path::Path) -> PluginEngine {
        PluginEngine::new(PluginLimits { max_instances: 1, ..PluginLimits::default() }, Some(cache.to_path_buf()))
            .unwrap()
    }

    #[test]
    fn a_tampered_cache_artefact_is_compiled_again_not_loaded() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("plugin-cache");
        let engine = engine(&dir);
        let compile = |bytes: &[u8]| engine.compile(&sha(bytes), bytes).unwrap().1;
        assert!(!compile(EMPTY), "compiled the first time");
        assert!(compile(EMPTY), "then from the cache");
        assert!(!compile(OTHER));
        let artefact = |bytes: &[u8]| {
            std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&sha(bytes)))
                .unwrap()
        };

        // A genuine artefact of another plugin under this one's name: wasmtime would load it.
        std::fs::copy(artefact(OTHER), artefact(EMPTY)).unwrap();
        assert!(!compile(EMPTY), "not loaded: compiled again");
        assert!(compile(EMPTY), "and the artefact rewritten");

        // One byte of the machine code changed.
        let mut code = std::fs::read(artefact(EMPTY)).unwrap();
        let at = code.len() / 2;
        code[at] ^= 0x40;
        std::fs::write(artefact(EMPTY), &code).unwrap();
        assert!(!compile(EMPTY), "not loaded: compiled again");
        assert!(compile(OTHER), "the other plugin's artefact is untouched");
    }

    #[cfg(unix)]
    #[test]
    fn a_cache_folder_others_can_write_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("plugin-cache");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let engine = engine(&dir);
        assert!(!engine.compile(&sha(EMPTY), EMPTY).unwrap().1);
        assert!(!engine.compile(&sha(EMPTY), EMPTY).unwrap().1, "never from the cache");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing written there");
    }
}
