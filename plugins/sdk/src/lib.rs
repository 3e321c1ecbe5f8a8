//! Write a hookgate plugin in Rust.
//!
//! A plugin is a WebAssembly component built against the WIT contract
//! `hookgate:plugin@0.1.0` (`plugins/wit/v0.1.0/plugin.wit`). With this crate it is a type
//! implementing [`Plugin`] and one macro call:
//!
//! ```ignore
//! use hookgate_plugin_sdk::{export_plugin, Header, OutgoingRequest, Plugin, PluginError, PluginInfo};
//!
//! struct Stamp;
//!
//! impl Plugin for Stamp {
//!     fn info() -> PluginInfo {
//!         PluginInfo::auth("stamp", env!("CARGO_PKG_VERSION"))
//!     }
//!     fn authorize(request: OutgoingRequest, config: &str) -> Result<Vec<Header>, PluginError> {
//!         Ok(vec![Header::new("x-stamp", &request.template)])
//!     }
//! }
//!
//! export_plugin!(Stamp);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (`crate-type = ["cdylib"]`)
//! and drop the `.wasm` into `config/plugins/`; the file stem is the name templates use.
//! Check it first with `hookgate plugin check FILE.wasm`.
//!
//! The sandbox has no files, sockets, environment or WASI clocks: use [`host`] for time,
//! randomness, HMAC, signing with the gateway's keys, a per-template cache and HTTP fetches
//! to allowed hosts. A panic fails the call (and that delivery) with the plugin's name.
//!
//! What the host allows is the template's say, in the plugin's section beside its config:
//!
//! ```yaml
//! auth:
//!   type: acme-signer
//!   allow_hosts: [auth.acme.example]  # hosts `host::fetch` may reach; none by default
//!   sign_keys: [acme]                 # keys `host::sign` may use; none by default
//!   sign_active_key: false            # whether `host::sign(None, ..)` (the active key) may
//! ```
//!
//! A `host::sign` with a key the template does not grant returns an error naming the key
//! and fails the call, and its delivery, even if the plugin carries on. `host::log` lines have
//! their control characters escaped and are capped (2 KiB a line; 32 lines and 16 KiB a
//! call); a [`PluginError`]'s message is cut at 1 KiB. A transform's requests count against
//! `plugins.max_output_bytes` with 256 bytes each besides their content, and their
//! `profiles` must add up (each profile of the payload counted once, in one request or as
//! skipped).

#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/v0.1.0",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_raw",
        default_bindings_module: "hookgate_plugin_sdk::bindings",
    });
}

pub use bindings::hookgate::plugin::host;
pub use bindings::hookgate::plugin::types::{
    Header, OutgoingRequest, PluginError, PluginInfo, Request, TransformOutput,
};
pub use serde_json;

/// A hookgate plugin. Implement the exports it supports; the others answer that they are
/// not supported.
pub trait Plugin {
    /// Name, version and capabilities (`authorize`, `transform`).
    fn info() -> PluginInfo;

    /// Headers to add to a webhook request. `config` is the template's plugin section as
    /// JSON (see [`parse_config`]).
    fn authorize(request: OutgoingRequest, config: &str) -> Result<Vec<Header>, PluginError> {
        let _ = (request, config);
        Err(PluginError::permanent("this plugin does not authorize requests"))
    }

    /// The requests to send for a campaign payload (JSON). For the test payload sent when
    /// a template loads (`is_test: true`), return requests without side effects.
    fn transform(payload: &[u8], config: &str) -> Result<TransformOutput, PluginError> {
        let _ = (payload, config);
        Err(PluginError::permanent("this plugin does not transform payloads"))
    }
}

/// Exports a [`Plugin`] type as the component's implementation of the contract.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            struct __HookgatePlugin;
            impl $crate::bindings::Guest for __HookgatePlugin {
                fn describe() -> $crate::PluginInfo {
                    <$plugin as $crate::Plugin>::info()
                }
                fn authorize(
                    request: $crate::OutgoingRequest,
                    config: ::std::string::String,
                ) -> ::std::result::Result<::std::vec::Vec<$crate::Header>, $crate::PluginError> {
                    <$plugin as $crate::Plugin>::authorize(request, &config)
                }
                fn transform(
                    payload: ::std::vec::Vec<u8>,
                    config: ::std::string::String,
                ) -> ::std::result::Result<$crate::TransformOutput, $crate::PluginError> {
                    <$plugin as $crate::Plugin>::transform(&payload, &config)
                }
            }
    $crate::bindings::__export_raw!(__HookgatePlugin with_types_in $crate::bindings);
        };
    };
}

impl PluginError {
    /// An error another attempt would not fix (bad config, bad input).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false }
    }

    /// An error another attempt may not meet (a token endpoint that timed out).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true }
    }
}

impl Header {
    pub fn new(name: &str, value: &str) -> Self {
        Self { name: name.to_string(), value: value.to_string() }
    }
}

/// The header in which hookgate gives each webhook request its delivery id: unique per
/// request and the same on every attempt of it.
pub const DELIVERY_ID_HEADER: &str = "x-hookgate-delivery-id";

impl OutgoingRequest {
    /// The value of header `name` (any case), if the request has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
    }

    /// The request's delivery id ([`DELIVERY_ID_HEADER`]): unique per request and the same
    /// on every attempt, so it suits idempotency keys and message ids. Requests hookgate
    /// makes outside a dispatch (the test payload sent when a template loads,
    /// `hookgate plugin check`) have none.
    pub fn delivery_id(&self) -> Option<&str> {
        self.header(DELIVERY_ID_HEADER)
    }
}

impl Request {
    /// A request with a JSON body carrying `profiles` profiles.
    pub fn json(method: &str, url: &str, body: &serde_json::Value, profiles: u32) -> Self {
        Self {
            method: method.into(),
            url: url.into(),
            headers: vec![Header::new("content-type", "application/json")],
            body: serde_json::to_vec(body).unwrap_or_default(),
            profiles,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }
}

impl PluginInfo {
    /// Info of an auth plugin.
    pub fn auth(name: &str, version: &str) -> Self {
        Self { name: name.into(), version: version.into(), capabilities: vec!["authorize".into()] }
    }

    /// Info of a transform plugin.
    pub fn transform(name: &str, version: &str) -> Self {
        Self { name: name.into(), version: version.into(), capabilities: vec!["transform".into()] }
    }
}

/// Parses the template's plugin config into `T`, with an error that names the problem.
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, PluginError> {
    serde_json::from_str(config).map_err(|e| PluginError::permanent(format!("bad config: {e}")))
}
