//! Cluster mode (`--nats`): several Broker nodes as one service over NATS JetStream. JetStream is the
//! second implementation of both storage seams:
//!
//! - `events`: the event log is one stream (`BROKER_EVENTS`, subjects `broker.ev.<tenant>.<name>`,
//!   the name one token per dot-separated part, see `subjects`);
//!   the stream sequence is the event id, the same on every node; each node tails the stream into
//!   its own fan-out;
//! - `users`: the user directory is a key-value bucket (`broker_users`) with compare-and-set, and
//!   shared values (the biscuit root key) live in `broker_meta`; each node watches the users bucket
//!   so a change made anywhere reaches every node's streams;
//! - `subjects`: names as subject tokens and keys;
//! - `batch_get`: many messages in one request (replay and catch-up reads);
//! - `cas`: publishing on a condition the server enforces, per subject (see there);
//! - `server_version`: the oldest nats-server whose guarantees Broker relies on.
//!
//! Broker creates the stream and buckets on first start and says so in its log.

mod batch_get;
pub mod cas;
pub mod events;
mod history;
mod retention;
pub mod server_version;
pub mod subjects;
pub mod user_copy;
pub mod users;

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::{self, kv, stream};
use futures_util::TryStreamExt;

use crate::config::Config;
use crate::storage::{StorageError, StorageResult};

/// The stream that holds every tenant's events.
const EVENTS_STREAM: &str = "BROKER_EVENTS";
const USERS_BUCKET: &str = "broker_users";
const META_BUCKET: &str = "broker_meta";
/// The event stream's metadata key that says its subjects hold a name one token per part, and its
/// value. A stream without it was made by an older Broker (see `name_tokens`).
const NAME_TOKENS_KEY: &str = "broker.name_tokens";
const PER_PART: &str = "per-part";
/// JetStream API calls and publish acknowledgements wait this long before a retry or a 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// A publish whose acknowledgement was lost is retried (with the same message id, so it is stored
/// once) for this long; JetStream's de-duplication window must be longer.
pub const PUBLISH_DEADLINE: Duration = Duration::from_secs(10);
/// How long start-up waits for NATS before giving up.
const STARTUP_DEADLINE: Duration = Duration::from_secs(60);

/// The connection and what Broker keeps in JetStream.
pub struct Cluster {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub events: stream::Stream,
    /// How the event stream's subjects hold event names.
    pub name_tokens: subjects::NameTokens,
    /// The users bucket, as a key-value store (to list and watch) and as its stream (to read from
    /// the leader and to write with `cas`).
    pub users: kv::Store,
    pub users_stream: stream::Stream,
    pub meta_stream: stream::Stream,
}

impl Cluster {
    /// Connects to `--nats` and creates (or finds) the stream and buckets, retrying while NATS is
    /// not reachable yet.
    pub async fn connect(config: &Config, urls: &str) -> anyhow::Result<Self> {
        let servers: Vec<&str> = urls
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .collect();
        let client = async_nats::ConnectOptions::new()
            .name("broker")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(REQUEST_TIMEOUT))
            .event_callback(|event| async move { log_connection_event(&event) })
            .connect(servers)
            .await
            .context("the --nats URLs")?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client.clone());
        let started = tokio::time::Instant::now();
        let version = server_version(&client, started).await?;
        tracing::info!(%version, "NATS server version");
        let replicas = config.nats_replicas();
        // The event stream's size (`--nats_max_mb`). Full, it refuses new events.
        let max_bytes = i64::try_from(config.nats_max_mb.max(1).saturating_mul(1 << 20)).unwrap_or(i64::MAX);
        loop {
            match Self::prepare(&client, &jetstream, replicas, max_bytes).await {
                Ok(cluster) => return Ok(cluster),
                Err(error) if format!("{error:#}").contains("insufficient storage") => {
                    return Err(error.context(format!(
                        "the NATS servers cannot hold an event stream of --nats_max_mb {} MiB: lower it, or raise their jetstream max_file_store",
                        config.nats_max_mb
                    )));
                }
                Err(error) if started.elapsed() < STARTUP_DEADLINE => {
                    tracing::warn!(error = format!("{error:#}"), "JetStream not ready; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(error) => return Err(error.context("preparing JetStream")),
            }
        }
    }

    async fn prepare(
        client: &async_nats::Client,
        jetstream: &jetstream::Context,
        replicas: usize,
        max_bytes: i64,
    ) -> anyhow::Result<Self> {
        let events = ensure_stream(
            jetstream,
            stream::Config {
                name: EVENTS_STREAM.into(),
                subjects: vec![format!("{}.>", subjects::EVENTS_PREFIX)],
                num_replicas: replicas,
                storage: stream::StorageType::File,
                duplicate_window: PUBLISH_DEADLINE * 12,
                allow_direct: true,
                max_messages_per_subject: -1,
                max_bytes,
                discard: stream::DiscardPolicy::New,
                metadata: [(NAME_TOKENS_KEY.to_owned(), PER_PART.to_owned())].into(),
                ..Default::default()
            },
        )
        .await?;
        let name_tokens = name_tokens(jetstream, &events).await?;
        let (users_stream, users) = ensure_bucket(jetstream, USERS_BUCKET, replicas).await?;
        let (meta_stream, _) = ensure_bucket(jetstream, META_BUCKET, replicas).await?;
        Ok(Self {
            client: client.clone(),
            jetstream: jetstream.clone(),
            events,
            name_tokens,
            users,
            users_stream,
            meta_stream,
        })
    }

    /// The newest message on `subject`, read from the stream's leader (a replica answering a
    /// direct get may lag behind it).
    pub async fn last_message(
        &self,
        stream: &stream::Stream,
        subject: &str,
    ) -> StorageResult<Option<StreamMessage>> {
        match stream.get_last_raw_message_by_subject(subject).await {
            Ok(message) => Ok(Some(message)),
            Err(error) if error.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(StorageError::unavailable(error)),
        }
    }
}

/// The subject of `key` in the key-value bucket whose stream is `stream`.
pub fn bucket_subject(stream: &stream::Stream, key: &str) -> String {
    let bucket = stream
        .cached_info()
        .config
        .name
        .trim_start_matches("KV_")
        .to_owned();
    format!("$KV.{bucket}.{key}")
}

/// Finds the stream named in `config`, or creates it and logs that it did.
async fn ensure_stream(
    jetstream: &jetstream::Context,
    config: stream::Config,
) -> anyhow::Result<stream::Stream> {
    let name = config.name.clone();
    match jetstream.get_stream(&name).await {
        Ok(stream) => adjust_stream(jetstream, stream, config).await,
        Err(error) if is_not_found(&error) => {
            let replicas = config.num_replicas;
            let stream = jetstream
                .get_or_create_stream(config)
                .await
                .with_context(|| format!("creating the JetStream stream {name}"))?;
            tracing::info!(stream = name, replicas, "created JetStream stream");
            Ok(stream)
        }
        Err(error) => Err(error).with_context(|| format!("looking up the JetStream stream {name}")),
    }
}

/// Reports an existing stream with fewer replicas than asked (changing them moves data: an
/// operator's decision), and sets its size limit and discard policy to the ones asked for.
async fn adjust_stream(
    jetstream: &jetstream::Context,
    mut stream: stream::Stream,
    wanted: stream::Config,
) -> anyhow::Result<stream::Stream> {
    let current = stream.cached_info().config.clone();
    if current.num_replicas < wanted.num_replicas {
        tracing::warn!(
            stream = current.name,
            replicas = current.num_replicas,
            asked = wanted.num_replicas,
            "the JetStream stream has fewer replicas than --nats_replicas asks for; raise them with `nats stream edit --replicas`"
        );
    }
    // The server keeps "no limit" as -1, whatever non-positive value asked for it.
    let max_bytes = if wanted.max_bytes > 0 {
        wanted.max_bytes
    } else {
        -1
    };
    if current.max_bytes != max_bytes || current.discard != wanted.discard {
        let config = stream::Config {
            max_bytes,
            discard: wanted.discard,
            ..current
        };
        jetstream
            .update_stream(&config)
            .await
            .with_context(|| format!("setting the size limit of the JetStream stream {}", config.name))?;
        tracing::info!(
            stream = config.name,
            max_bytes = config.max_bytes,
            "set the JetStream stream's size limit"
        );
        stream.info().await.context("reading the stream back")?;
    }
    Ok(stream)
}

/// How the event stream holds names. One Broker made or stamped says so in its metadata. A stream
/// an older Broker made holds names with dots as one token, each message under the subject it was
/// published on: if it holds any such name it keeps that form (a dotted name's events must stay on
/// one subject, which per-name compare-and-set and reads rely on); if not, the two forms agree on
/// every subject it holds, and it is stamped. Every node of a cluster must run this version
/// before any writes a dotted name (an older one would write it in the other form).
async fn name_tokens(
    jetstream: &jetstream::Context,
    events: &stream::Stream,
) -> anyhow::Result<subjects::NameTokens> {
    let config = &events.cached_info().config;
    if config.metadata.get(NAME_TOKENS_KEY).map(String::as_str) == Some(PER_PART) {
        return Ok(subjects::NameTokens::PerPart);
    }
    // Every subject of one name token; a dotted name in one token is the older form.
    let listed = events
        .info_with_subjects(format!("{}.*.*", subjects::EVENTS_PREFIX))
        .await;
    let mut listed = listed.context("listing the event stream's subjects")?;
    let mut whole = 0u64;
    while let Some((subject, _)) = listed
        .try_next()
        .await
        .context("listing the event stream's subjects")?
    {
        let name = subject
            .rsplit_once('.')
            .and_then(|(_, token)| subjects::name(token));
        whole += u64::from(name.is_some_and(|name| name.contains('.')));
    }
    if whole > 0 {
        tracing::warn!(
            stream = config.name,
            names = whole,
            "the event stream holds event names with dots as one subject token, as Broker did before; \
             it keeps that form, and a history page of a prefix filter reads all of a tenant's events"
        );
        return Ok(subjects::NameTokens::Whole);
    }
    let mut stamped = config.clone();
    stamped
        .metadata
        .insert(NAME_TOKENS_KEY.to_owned(), PER_PART.to_owned());
    jetstream
        .update_stream(&stamped)
        .await
        .context("stamping the event stream's metadata")?;
    tracing::info!(
        stream = config.name,
        "the event stream now holds names one subject token per part"
    );
    Ok(subjects::NameTokens::PerPart)
}

fn is_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(error.kind(), jetstream::context::GetStreamErrorKind::JetStream(e)
        if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// A key-value bucket with history 1, and its stream. The stream is made here, as async-nats would
/// make it, because its `create_key_value` needs account fields that nats-server 2.9 does not send.
async fn ensure_bucket(
    jetstream: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> anyhow::Result<(stream::Stream, kv::Store)> {
    let stream = ensure_stream(
        jetstream,
        stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            num_replicas: replicas,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        },
    )
    .await?;
    let store = jetstream
        .get_key_value(bucket)
        .await
        .with_context(|| format!("opening the key-value bucket {bucket}"))?;
    Ok((stream, store))
}

/// The version of the first server reached, once the client is connected, refused if too old.
async fn server_version(
    client: &async_nats::Client,
    started: tokio::time::Instant,
) -> anyhow::Result<server_version::Version> {
    while client.connection_state() != async_nats::connection::State::Connected {
        anyhow::ensure!(
            started.elapsed() < STARTUP_DEADLINE,
            "no NATS server reachable at --nats within {STARTUP_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server_version::check(&client.server_info().version)
}

fn log_connection_event(event: &async_nats::Event) {
    match event {
        async_nats::Event::Connected => tracing::info!("connected to NATS"),
        async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS; reconnecting"),
        other => tracing::debug!(event = %other, "NATS client event"),
    }
}
