//! The user directory on JetStream key-value: one key per user (the base64url of the username).
//! Reads go to the bucket stream's leader; `create` and every update are publishes conditional on
//! the user's own key (`cas`), so a username is unique cluster-wide, no concurrent change is lost,
//! and writes to different users never contend. A watch on the
//! bucket tells this node's fan-out about changes made on any node.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use async_nats::jetstream::message::StreamMessage;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use uuid::Uuid;

use super::{Cluster, bucket_subject, subjects};
use crate::model::User;
use crate::storage::{StorageError, StorageResult, storable_name};
use crate::user_directory::{UserChange, UserChanged, UserDirectory};

pub struct KvUsers {
    cluster: Arc<Cluster>,
    changed: UserChanged,
}

impl KvUsers {
    /// The directory, with a watch that calls `changed` for every user changed on any node.
    pub fn start(cluster: Arc<Cluster>, changed: UserChanged, shutdown: CancellationToken) -> Self {
        tokio::spawn(watch(cluster.users.clone(), changed.clone(), shutdown));
        Self { cluster, changed }
    }

    /// The user, read from the bucket stream's leader.
    async fn read(&self, username: &str) -> StorageResult<Option<User>> {
        if !storable_name(username) {
            return Ok(None);
        }
        let subject = bucket_subject(&self.cluster.users_stream, &subjects::token(username));
        let message = self
            .cluster
            .last_message(&self.cluster.users_stream, &subject)
            .await?;
        user_in(message)
    }
}

/// The user a key's last message holds; `None` for no message or a deletion.
fn user_in(message: Option<StreamMessage>) -> StorageResult<Option<User>> {
    match message {
        Some(message) if !is_deletion(&message.headers) => Ok(Some(
            serde_json::from_slice(&message.payload).map_err(StorageError::unavailable)?,
        )),
        _ => Ok(None),
    }
}

/// Whether a key-value message marks its key deleted or purged (Broker never does; an operator
/// with the `nats` tool might).
fn is_deletion(headers: &async_nats::HeaderMap) -> bool {
    headers.get("KV-Operation").is_some_and(|op| op.as_str() != "PUT")
}

fn encode(user: &User) -> StorageResult<bytes::Bytes> {
    Ok(serde_json::to_vec(user)
        .map_err(StorageError::unavailable)?
        .into())
}

#[async_trait::async_trait]
impl UserDirectory for KvUsers {
    async fn get(&self, username: &str) -> StorageResult<Option<User>> {
        self.read(username).await
    }

    async fn list(&self) -> StorageResult<Vec<User>> {
        let mut keys = self
            .cluster
            .users
            .keys()
            .await
            .map_err(StorageError::unavailable)?;
        let mut users = Vec::new();
        while let Some(key) = keys.next().await {
            let Some(username) = subjects::name(&key.map_err(StorageError::unavailable)?) else {
                continue;
            };
            if let Some(user) = self.read(&username).await? {
                users.push(user);
            }
        }
        users.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(users)
    }

    async fn create(&self, user: User) -> StorageResult<bool> {
        if !storable_name(&user.username) {
            return Err(StorageError::BadKey);
        }
        let subject = bucket_subject(&self.cluster.users_stream, &subjects::token(&user.username));
        let payload = &encode(&user)?;
        let if_absent = |last| async move {
            match user_in(last)? {
                Some(_) => Ok(None),
                None => Ok(Some((payload.clone(), ()))),
            }
        };
        let (stream, id) = (&self.cluster.users_stream, Uuid::new_v4().to_string());
        let created = self
            .cluster
            .publish_if_subject_unchanged(stream, &subject, &id, if_absent)
            .await?;
        Ok(created.is_some())
    }

    async fn update_if(&self, username: &str, change: UserChange) -> StorageResult<Option<User>> {
        let subject = bucket_subject(&self.cluster.users_stream, &subjects::token(username));
        let change = &change;
        let changed = |last| async move {
            let Some(mut user) = user_in(last)? else {
                return Ok(None);
            };
            if !change(&mut user) {
                return Ok(None);
            }
            user.revision += 1;
            Ok(Some((encode(&user)?, user)))
        };
        let stream = &self.cluster.users_stream;
        let updated = self
            .cluster
            .publish_if_subject_unchanged(stream, &subject, &Uuid::new_v4().to_string(), changed)
            .await?;
        let Some((_, user)) = updated else {
            return Ok(None);
        };
        // The watch tells every node, this one included; telling this one now means a change is
        // applied to its streams before the caller hears it was made.
        (self.changed)(username);
        Ok(Some(user))
    }

    async fn shared_value(&self, key: &str, init: Vec<u8>) -> StorageResult<Vec<u8>> {
        let stream = &self.cluster.meta_stream;
        let subject = bucket_subject(stream, &subjects::token(key));
        let subject = &subject;
        let current = || async move {
            let message = self.cluster.last_message(stream, subject).await?;
            Ok::<_, StorageError>(message.map(|message| message.payload.to_vec()))
        };
        if let Some(value) = current().await? {
            return Ok(value);
        }
        let payload = &bytes::Bytes::from(init);
        let if_absent = |last: Option<StreamMessage>| async move {
            match last {
                Some(_) => Ok(None),
                None => Ok(Some((payload.clone(), ()))),
            }
        };
        self.cluster
            .publish_if_subject_unchanged(stream, subject, &Uuid::new_v4().to_string(), if_absent)
            .await?;
        // Whoever was first, this is now the value.
        current()
            .await?
            .ok_or_else(|| StorageError::Unavailable(format!("the shared value {key} is missing")))
    }
}

/// Calls `changed` for each user changed on any node, re-opening the watch whenever it fails,
/// from just after the last change it saw: a change made while the watch was down (a revoke
/// during a NATS restart) is still seen. A repeat only makes streams re-check.
async fn watch(users: kv::Store, changed: UserChanged, shutdown: CancellationToken) {
    // Where the bucket stood when the watch first opened; a change after it is never skipped.
    let mut last_seen = match users.stream.get_info().await {
        Ok(info) => Some(info.state.last_sequence),
        Err(_) => None,
    };
    loop {
        let opened = match last_seen {
            Some(revision) => users.watch_all_from_revision(revision + 1).await,
            None => users.watch_all().await,
        };
        match opened {
            Ok(mut changes) => loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return,
                    next = changes.next() => next,
                };
                match next {
                    Some(Ok(entry)) => {
                        last_seen = Some(entry.revision);
                        if let Some(username) = subjects::name(&entry.key) {
                            changed(&username);
                        }
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, resume_after = last_seen, "the user watch failed; re-opening it");
                        break;
                    }
                    None => break,
                }
            },
            Err(error) => tracing::warn!(%error, "could not watch users; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
