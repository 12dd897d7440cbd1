//! End-to-end tests: each starts the real `broker` binary on loopback with a temporary database and
//! talks to it over HTTP and SSE as a client app would.

mod support;

mod accounts;
mod acme;
mod cluster;
mod cluster_accounts;
mod cluster_faults;
mod console;
mod crash;
mod durability;
mod erasure;
mod events;
mod filters;
mod guessing;
mod guest_authoring;
mod guest_sandbox;
mod guests;
mod history;
mod idempotency;
mod identity;
mod js_client;
mod js_guest;
mod limits;
mod load;
mod metrics;
mod npm_client;
mod openapi;
mod operations;
mod passwords;
mod presence;
mod promises;
mod protocol;
mod rate_limits;
mod read_rules;
mod retention;
mod safe_defaults;
mod schemathesis;
mod scopes;
mod stateful_guests;
mod streams;
mod tls;
mod webhooks;
