//! The same scenarios against PocketBase (`--target pocketbase`), the peer a team would most often
//! pick instead of Broker: inserts are record creations in a collection of this run with a JSON
//! `data` field, made with a superuser token (`--admin-token EMAIL:PASSWORD`); subscribers hold
//! `GET /api/realtime` and subscribe to the collection with `POST /api/realtime`. The events carry
//! the same stamps in `data`, so loss, duplication, order and latency are judged alike.

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::api::{Auth, SseFrames, Target};

/// The collection this run's events go to.
pub fn collection(target: &Target) -> String {
    format!("load_{}", target.run_id)
}

/// The superuser's token, after making sure this run's collection exists. PocketBase has no users
/// of a tenant to create: every "user" of a scenario is the superuser.
pub async fn superuser(target: &Target, http: &reqwest::Client) -> anyhow::Result<String> {
    let (identity, password) = target
        .admin_token
        .split_once(':')
        .context("--target pocketbase takes --admin-token EMAIL:PASSWORD of a superuser")?;
    let response = http
        .post(format!(
            "{}/api/collections/_superusers/auth-with-password",
            target.url
        ))
        .json(&json!({"identity": identity, "password": password}))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("pocketbase superuser login: {}", response.status());
    }
    let answer: Value = response.json().await?;
    let token = answer["token"]
        .as_str()
        .context("auth answer without token")?
        .to_owned();
    let existing = http
        .get(format!("{}/api/collections/{}", target.url, collection(target)))
        .bearer_auth(&token)
        .send()
        .await?;
    if existing.status() == reqwest::StatusCode::NOT_FOUND {
        // Empty rules: anyone may list, view and create (the scenarios use the superuser anyway).
        let definition = json!({
            "name": collection(target), "type": "base",
            "fields": [{"name": "event", "type": "text"}, {"name": "data", "type": "json"}],
            "listRule": "", "viewRule": "", "createRule": "",
        });
        let created = http
            .post(format!("{}/api/collections", target.url))
            .bearer_auth(&token)
            .json(&definition)
            .send()
            .await?;
        if !created.status().is_success() {
            bail!(
                "pocketbase collection: {} {}",
                created.status(),
                created.text().await.unwrap_or_default()
            );
        }
    }
    Ok(token)
}

/// Where an insert goes.
pub fn insert_url(target: &Target) -> String {
    format!("{}/api/collections/{}/records", target.url, collection(target))
}

/// Subscribes an open `/api/realtime` stream, whose first frame names its client, to this run's
/// collection.
pub async fn subscribe(
    target: &Target,
    http: &reqwest::Client,
    auth: &Auth,
    frames: &mut SseFrames,
) -> anyhow::Result<()> {
    let connect = frames
        .next_data()
        .await
        .context("realtime closed before PB_CONNECT")?;
    let connect: Value = serde_json::from_slice(connect)?;
    let client_id = connect["clientId"]
        .as_str()
        .context("PB_CONNECT without clientId")?;
    let body = json!({"clientId": client_id, "subscriptions": [collection(target)]});
    let response = auth
        .apply(http.post(format!("{}/api/realtime", target.url)))
        .json(&body)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("pocketbase realtime subscription: {}", response.status());
    }
    Ok(())
}
