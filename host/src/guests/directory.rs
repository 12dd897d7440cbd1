//! The guests directory: `<tenant_name>.wasm` and `default.wasm`, loaded at start and then polled.
//! A new or changed file is compiled and swapped in once it has stopped changing (so a half-written
//! file is not compiled); a file that does not load is refused with a logged reason and the
//! previous guest stays; a removed file falls back to the default. Polling (two `stat`s a file a
//! second) is used instead of inotify so that it behaves the same on every filesystem.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::Guests;

const POLL: Duration = Duration::from_millis(400);

/// Which guest a file is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Slot {
    Default,
    Tenant(String),
}

impl Slot {
    /// The file that fills this slot.
    fn file_name(&self) -> String {
        match self {
            Self::Default => "default.wasm".to_owned(),
            Self::Tenant(tenant) => format!("{tenant}.wasm"),
        }
    }

    fn of(file_name: &str) -> Option<Self> {
        let stem = file_name.strip_suffix(".wasm")?;
        if stem.is_empty() || stem.starts_with('.') {
            return None;
        }
        Some(if stem == "default" {
            Self::Default
        } else {
            Self::Tenant(stem.to_owned())
        })
    }
}

/// What a file looked like: a change in either means it was rewritten.
type Fingerprint = (SystemTime, u64);

fn scan(dir: &Path) -> HashMap<Slot, (PathBuf, Fingerprint)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let slot = Slot::of(entry.file_name().to_str()?)?;
            let meta = entry.metadata().ok().filter(std::fs::Metadata::is_file)?;
            Some((slot, (entry.path(), (meta.modified().ok()?, meta.len()))))
        })
        .collect()
}

/// Loads the directory now, then keeps it in sync until `shutdown`.
pub async fn watch(guests: Arc<Guests>, dir: PathBuf, shutdown: CancellationToken) {
    let mut watcher = Watcher {
        guests,
        dir,
        applied: HashMap::new(),
        settling: HashMap::new(),
    };
    let initial = scan(&watcher.dir);
    for (slot, (path, fingerprint)) in initial {
        watcher.apply(slot, &path, fingerprint).await;
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(POLL) => watcher.poll().await,
            }
        }
    });
}

struct Watcher {
    guests: Arc<Guests>,
    dir: PathBuf,
    /// The file version last acted on (installed or refused), per slot.
    applied: HashMap<Slot, Fingerprint>,
    /// A changed version seen once; acted on when the next poll sees it unchanged.
    settling: HashMap<Slot, Fingerprint>,
}

impl Watcher {
    async fn poll(&mut self) {
        let current = scan(&self.dir);
        let removed: Vec<Slot> = self
            .applied
            .keys()
            .filter(|s| !current.contains_key(*s))
            .cloned()
            .collect();
        for slot in removed {
            self.applied.remove(&slot);
            self.guests.set(&slot, None);
            self.guests.note_refusal(&slot.file_name(), None);
            tracing::info!(?slot, "guest file removed; falling back to the default guest");
        }
        self.settling.retain(|slot, _| current.contains_key(slot));
        for (slot, (path, fingerprint)) in current {
            if self.applied.get(&slot) == Some(&fingerprint) {
                continue;
            }
            if self.settling.get(&slot) == Some(&fingerprint) {
                self.settling.remove(&slot);
                self.apply(slot, &path, fingerprint).await;
            } else {
                self.settling.insert(slot, fingerprint);
            }
        }
    }

    /// Compiles `path` and installs it for `slot`, or logs why not and keeps the previous guest.
    async fn apply(&mut self, slot: Slot, path: &Path, fingerprint: Fingerprint) {
        self.applied.insert(slot.clone(), fingerprint);
        let guests = self.guests.clone();
        let file = path.to_path_buf();
        let loaded = tokio::task::spawn_blocking(move || {
            let wasm = std::fs::read(&file)?;
            let label = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            guests.engine.load(&label, &wasm)
        })
        .await;
        match loaded {
            Ok(Ok(guest)) => {
                tracing::info!(?slot, file = %path.display(), "guest installed");
                self.guests.set(&slot, Some(guest));
                self.guests.note_refusal(&slot.file_name(), None);
            }
            Ok(Err(error)) => {
                self.guests
                    .note_refusal(&slot.file_name(), Some(format!("{error:#}")));
                tracing::warn!(?slot, file = %path.display(), error = format!("{error:#}"), "guest refused; keeping the previous guest");
            }
            Err(error) => tracing::error!(%error, "guest loading task failed"),
        }
    }
}
