//! The user directory on JetStream key-value: one key per user (the base64url of the username).
//! `create` and every update are publishes conditional on the user's own key (`cas`), so a username
//! is unique cluster-wide, no concurrent change is lost, and writes to different users never
//! contend. A watch on the bucket keeps this node's copy of every user (`user_copy`), which
//! answers reads with no round trip, and tells this node's fan-out about changes made on any node.
//! While the copy is not current, and for a name it does not hold, reads go to the stream leader.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use async_nats::jetstream::message::StreamMessage;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use uuid::Uuid;

use super::cas::Expect;
use super::user_copy::{Known, UserCopy};
use super::{Cluster, bucket_subject, subjects};
use crate::model::User;
use crate::storage::{StorageError, StorageResult, storable_name};
use crate::user_directory::{UserChange, UserChanged, UserDirectory};

pub struct KvUsers {
    cluster: Arc<Cluster>,
    changed: UserChanged,
    copy: Arc<UserCopy>,
}

impl KvUsers {
    /// The directory, with a watch that keeps this node's copy and calls `changed` for every user
    /// changed on any node.
    pub fn start(cluster: Arc<Cluster>, changed: UserChanged, shutdown: CancellationToken) -> Self {
        let copy = Arc::new(UserCopy::default());
        tokio::spawn(watch(
            cluster.users.clone(),
            copy.clone(),
            changed.clone(),
            shutdown,
        ));
        Self {
            cluster,
            changed,
            copy,
        }
    }

    /// The user, read from the bucket stream's leader (and kept in the copy).
    async fn read(&self, username: &str) -> StorageResult<Option<User>> {
        if !storable_name(username) {
            return Ok(None);
        }
        let subject = bucket_subject(&self.cluster.users_stream, &subjects::token(username));
        let message = self
            .cluster
            .last_message(&self.cluster.users_stream, &subject)
            .await?;
        let revision = message.as_ref().map(|message| message.sequence);
        let user = user_in(message)?;
        if let Some(revision) = revision {
            self.copy.apply(username, revision, user.clone());
        }
        Ok(user)
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

/// The user a watch entry holds; `None` for a deletion, or a record this version cannot read
/// (logged: reads of it go to the leader, which answers the same, so it stays unknown).
fn user_of(entry: &kv::Entry) -> Option<User> {
    if entry.operation != kv::Operation::Put {
        return None;
    }
    match serde_json::from_slice(&entry.value) {
        Ok(user) => Some(user),
        Err(error) => {
            tracing::error!(%error, key = entry.key, "a user record the watch cannot read");
            None
        }
    }
}

fn encode(user: &User) -> StorageResult<bytes::Bytes> {
    Ok(serde_json::to_vec(user)
        .map_err(StorageError::unavailable)?
        .into())
}

#[async_trait::async_trait]
impl UserDirectory for KvUsers {
    async fn get(&self, username: &str) -> StorageResult<Option<User>> {
        // Cut off from NATS, the copy may miss a revoke made elsewhere: ask the leader (a 503).
        if self.cluster.client.connection_state() != async_nats::connection::State::Connected {
            return self.read(username).await;
        }
        match self.copy.get(username) {
            Known::User(user) => Ok(Some(*user)),
            Known::Gone => Ok(None),
            Known::Unsure => self.read(username).await,
        }
    }

    async fn get_latest(&self, username: &str) -> StorageResult<Option<User>> {
        self.read(username).await
    }

    async fn list(&self) -> StorageResult<Vec<User>> {
        if let Some(users) = self.copy.list() {
            return Ok(users);
        }
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
        // Visible on this node at once: the caller may log in before the watch delivers it.
        if let Some((revision, ())) = created {
            self.copy.apply(&user.username, revision, Some(user.clone()));
        }
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
        let Some((revision, user)) = updated else {
            return Ok(None);
        };
        self.copy.apply(username, revision, Some(user.clone()));
        // The watch tells every node, this one included; telling this one now means a change is
        // applied to its streams before the caller hears it was made.
        (self.changed)(username);
        Ok(Some(user))
    }

    async fn delete(&self, username: &str) -> StorageResult<Option<User>> {
        let Some(user) = self.read(username).await? else {
            return Ok(None);
        };
        // A purge, not a delete: the key's earlier revisions (old password hashes, old data) go
        // too. A write racing it is either before (and purged) or after (a new user of the name).
        let purged = self.cluster.users.purge(subjects::token(username)).await;
        purged.map_err(StorageError::unavailable)?;
        // The copy learns of the purge from the leader now, not when the watch brings it.
        self.read(username).await?;
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

    async fn value(&self, key: &str) -> StorageResult<Option<Vec<u8>>> {
        let stream = &self.cluster.meta_stream;
        let subject = bucket_subject(stream, &subjects::token(key));
        let message = self.cluster.last_message(stream, &subject).await?;
        Ok(message.map(|message| message.payload.to_vec()))
    }

    async fn set_value(&self, key: &str, value: Vec<u8>) -> StorageResult<()> {
        let subject = bucket_subject(&self.cluster.meta_stream, &subjects::token(key));
        let id = Uuid::new_v4().to_string();
        let published = self.cluster.publish(&subject, value.into(), &id, Expect::Nothing);
        published.await.map(drop)
    }

    async fn replace_value(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> StorageResult<bool> {
        let stream = &self.cluster.meta_stream;
        let subject = bucket_subject(stream, &subjects::token(key));
        let expected = &expected.filter(|bytes| !bytes.is_empty());
        let payload = &bytes::Bytes::from(value);
        let if_expected = |last: Option<StreamMessage>| async move {
            let current = last
                .map(|message| message.payload)
                .filter(|bytes| !bytes.is_empty());
            Ok((current.as_deref() == expected.as_deref()).then(|| (payload.clone(), ())))
        };
        let id = Uuid::new_v4().to_string();
        let published = self
            .cluster
            .publish_if_subject_unchanged(stream, &subject, &id, if_expected)
            .await?;
        Ok(published.is_some())
    }
}

/// Keeps `copy` and calls `changed` for each user changed on any node. The watch starts at the
/// bucket's beginning (each key's latest record: the whole directory) and is re-opened whenever it
/// fails from just after the last change it saw, so a change made while it was down (a revoke
/// during a NATS restart) is still seen; the copy answers only once the watch has caught up with
/// where the bucket stood when it (re-)opened. A repeat only makes streams re-check.
async fn watch(users: kv::Store, copy: Arc<UserCopy>, changed: UserChanged, shutdown: CancellationToken) {
    let mut last_seen = 0;
    loop {
        copy.set_current(false);
        let followed = tokio::select! {
            () = shutdown.cancelled() => return,
            followed = follow(&users, &copy, &changed, &mut last_seen) => followed,
        };
        tracing::warn!(
            error = followed,
            resume_after = last_seen,
            "the user watch failed; re-opening it"
        );
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Follows the bucket from just after `last_seen` until the watch fails; says why.
async fn follow(users: &kv::Store, copy: &UserCopy, changed: &UserChanged, last_seen: &mut u64) -> String {
    let caught_up_at = match users.stream.get_info().await {
        Ok(info) => info.state.last_sequence,
        Err(error) => return error.to_string(),
    };
    let mut changes = match users.watch_all_from_revision(*last_seen + 1).await {
        Ok(changes) => changes,
        Err(error) => return error.to_string(),
    };
    copy.set_current(*last_seen >= caught_up_at);
    loop {
        match changes.next().await {
            Some(Ok(entry)) => {
                *last_seen = entry.revision;
                if let Some(username) = subjects::name(&entry.key) {
                    copy.apply(&username, entry.revision, user_of(&entry));
                    changed(&username);
                }
                if *last_seen >= caught_up_at {
                    copy.set_current(true);
                }
            }
            Some(Err(error)) => return error.to_string(),
            None => return "the watch ended".to_owned(),
        }
    }
}
