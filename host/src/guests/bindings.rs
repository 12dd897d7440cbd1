//! Host bindings generated from `wit/broker.wit` (the same file the guests read).

wasmtime::component::bindgen!({ path: "../wit", world: "validator" });
