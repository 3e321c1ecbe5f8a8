//! hookgate's WASM plugin host: partners' plugins are WebAssembly components built against
//! the WIT contract in `plugins/wit/` and dropped into `config/plugins/`; templates name them
//! like a built-in (`auth: {type: acme-signer, ...}`).
//!
//! `engine` compiles (with an on-disk cache, `cache`), limits and calls plugins; `pool` keeps
//! instances between calls of one template version; `state` is an instance's store data and
//! the host functions; `source` is the folder of plugins, hot-reloaded,
//! that `core` sees as a plugin source, each plugin name's live version in a `slot`; `auth`
//! and `transform` adapt a plugin to `core`'s auth and transform contracts, with what they
//! share in `adapter`.

pub mod adapter;
pub mod auth;
pub mod bindings;
pub mod cache;
pub mod engine;
pub mod pool;
pub mod slot;
pub mod source;
pub mod state;
pub mod text;
pub mod transform;

pub use engine::{CallError, LoadedPlugin, PluginEngine};
pub use pool::{InstancePool, Lease, Leased};

pub use source::WasmPlugins;
