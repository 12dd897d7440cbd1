//! Host bindings generated from `wit/broker.wit` (the same file the guests read).

// `validate` is called with `call_async`: it runs on a fiber on the calling task, so WASI host calls
// are awaited rather than blocked on, and a long-running guest can yield to other tasks.
wasmtime::component::bindgen!({
    path: "../wit",
    world: "validator",
    exports: { default: async },
    // A guest's state read may wait on the event log (a network round trip in a cluster).
    imports: { "broker:guest/state.latest": async },
});
