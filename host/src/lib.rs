//! Broker: a real-time Backend-as-a-Service whose inserts pass through per-tenant WebAssembly guests.
//!
//! The path of one insert: `http` parses → `auth` says who is calling → `guests` validate or
//! transform the data → the event log commits it (`store::writer`'s group commit, or a JetStream
//! publish) → `fanout` hands it to the tenant's live `/sse` streams. Each module has one job:
//!
//! - `app`: the wiring (`run`): listeners, storage, services, serving until shutdown.
//! - `config`: flags and their environment variables.
//! - `server`: the accept loop and graceful shutdown; `http`: routing, bodies, CORS, the endpoints.
//! - `tls`: HTTPS with your own certificate or ACME (`--secure`).
//! - `accounts`: the changes that end a user's credentials (the one place that bumps their
//!   generation); `erasure`: deleting users and tenants and erasing their events.
//! - `auth`: Bearer JWT and Basic credentials, argon2 passwords, the admin token, biscuit tokens.
//! - `insert`: the insert path as one library call; `subscribe`: the subscribe path as one call;
//!   `history`: pages of past events (`GET /events`).
//! - `guests`: the guest step (validate / replace / reject).
//! - `event_log`, `user_directory`: the two storage seams the paths use, chosen once in `run`;
//!   `storage`: their one backend-free error and the bound on names in keys.
//! - `store`: LMDB through heed behind both seams, with the single event writer.
//! - `cluster`: NATS JetStream behind both seams (`--nats`), for several nodes as one service.
//! - `metrics`: Prometheus metrics (`--metrics_port`); `backup`: `broker backup`.
//! - `limits`: token buckets and counts per user, tenant and client address, with per-tenant
//!   overrides.
//! - `retention`: trimming old events in the background, never the newest of a name.
//! - `webhooks`: POSTing committed events to registered URLs, in order, at least once, signed
//!   (Standard Webhooks), one node at a time per webhook.
//! - `presence`: which users have an open stream, per tenant, coalesced, across nodes.
//! - `filter`: the `?events=` filter a connection chooses its events with.
//! - `fanout`: live channels of pre-rendered frames, per tenant and filter, indexed by name and
//!   prefix; and per-user change watches.
//! - `model`: the user and event records; `clock`: "now"; `validate`: field checks; `error`: the
//!   API error type.

pub mod accounts;
mod app;
pub mod auth;
pub mod backup;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod erasure;
pub mod error;
pub mod event_log;
pub mod fanout;
pub mod filter;
pub mod guests;
pub mod history;
pub mod http;
pub mod idempotency;
pub mod insert;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod presence;
pub mod read_rule;
pub mod retention;
pub mod server;
pub mod storage;
pub mod store;
pub mod subscribe;
pub mod tls;
pub mod user_directory;
pub mod validate;
pub mod webhooks;

pub use app::{Listeners, run};
