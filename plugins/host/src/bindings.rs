//! Host bindings of the WIT contract `hookgate:plugin@0.1.0` (plugins/wit/v0.1.0).

wasmtime::component::bindgen!({
    path: "../wit/v0.1.0",
    world: "plugin",
    imports: {
        "hookgate:plugin/host.fetch": async | trappable,
        default: trappable,
    },
    exports: { default: async },
});
