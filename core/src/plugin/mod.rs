//! The plugin contract: how a template's request gets its headers and auth.
//!
//! `core` knows only these traits. Built-in plugins (`hookgate-auth`) and WASM plugins
//! (`plugins/host`) implement them and are registered by name in a [`PluginRegistry`];
//! a template names one with `auth: {type: NAME, ...}`.

pub mod auth;
pub mod keys;
pub mod registry;
pub mod transform;

pub use auth::{
    AuthError, AuthHeaders, AuthPlugin, Authorizer, BuildContext, OutgoingRequest, TokenInfo, Unauthorized,
};
pub use keys::{KeyError, KeyInfo, KeyStore, SigningAlg};
pub use registry::{PluginRegistry, PluginSource, PluginStatus};
pub use transform::{
    PlannedRequest, RequestTarget, TransformContext, TransformError, TransformFailure, TransformPlugin, Transformed,
    Transformer,
};
