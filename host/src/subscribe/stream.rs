//! The stream state machine behind `Streams::subscribe`: replay, catch-up pages, live frames,
//! and the user and credential checks that end it. See the module above for the steps.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Sleep;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::Streams;
use crate::auth::scopes::{self, Operation};
use crate::event_log::LatestReplay;
use crate::fanout::{Frame, LiveFeed, UserWatch};
use crate::filter::EventFilter;
use crate::metrics::{OpenGuard, metrics};
use crate::model::User;
use crate::presence::{self, Joined, Users};
use crate::read_rule::{ReadAnswers, Reader};
use crate::storage::StorageError;

/// Most events read from the store per catch-up page.
const STORE_PAGE: usize = 500;
/// A catch-up page stops early past this many bytes of event data, so one page of large events
/// cannot take a large share of memory.
const STORE_PAGE_BYTES: usize = 1 << 20;

/// Why a stream ended (logged at debug level; a store error at error level).
#[derive(Debug)]
enum End {
    ShuttingDown,
    UserChanged,
    ScopesRemoved,
    CredentialsExpired,
    Store(StorageError),
}

/// The user a stream belongs to, and what ends it.
pub(super) struct Viewer {
    pub(super) owner: Owner,
    pub(super) watch: UserWatch,
    /// Fires when the credential that opened the stream expires. Made once per stream, not per
    /// event: a timer made and dropped for every delivery showed in fan-out profiles.
    pub(super) expiry: Pin<Box<Sleep>>,
}

/// What ends or re-checks a user's stream.
enum ViewerNews {
    CredentialExpired,
    UserChanged,
    WatchClosed,
}

/// The next news of the viewer; never, for the admin console.
async fn viewer_news(viewer: &mut Option<Viewer>) -> ViewerNews {
    let Some(viewer) = viewer else {
        return std::future::pending().await;
    };
    tokio::select! {
        biased;
        () = viewer.expiry.as_mut() => ViewerNews::CredentialExpired,
        changed = viewer.watch.changed() => if changed { ViewerNews::UserChanged } else { ViewerNews::WatchClosed },
    }
}

/// Who a stream belongs to: just what is needed to tell whether it may go on.
pub(super) struct Owner {
    pub(super) username: String,
    /// The user's id: a user deleted and created again under the name is not this one.
    pub(super) id: uuid::Uuid,
    pub(super) tenant_name: String,
    pub(super) credential_generation: u64,
    /// The user's current scopes with `--enforce_scopes`; `None` lets every event through.
    pub(super) scopes: Option<Vec<String>>,
    /// The user's current scopes, enforced or not: the read rule sees them.
    pub(super) all_scopes: Vec<String>,
}

impl Owner {
    /// Keeps `current`'s scopes for filtering; false when they allow receiving nothing at all.
    pub(super) fn take_scopes(&mut self, current: Option<&User>) -> bool {
        let scopes = current.map(|user| user.scope_list().to_vec()).unwrap_or_default();
        let receives_any = scopes::allows_any(&scopes, Operation::Get);
        self.scopes = Some(scopes);
        receives_any
    }

    /// The user may keep streaming: it exists, is not revoked, and its credentials have not ended
    /// (no password change, reset, revoke or tenant move) since the stream opened.
    pub(super) fn still_allowed(&self, current: Option<&User>) -> bool {
        current.is_some_and(|user| {
            !user.revoked
                && user.id == self.id
                && user.tenant_name == self.tenant_name
                && user.credential_generation == self.credential_generation
        })
    }
}

/// Completes when the keep-alive timer fires; never without one.
async fn keep_alive_tick(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(timer) => timer.as_mut().await,
        None => std::future::pending().await,
    }
}

pub(super) struct EventStream {
    streams: Arc<Streams>,
    tenant: String,
    /// The user the stream belongs to; `None` for the admin console.
    viewer: Option<Viewer>,
    /// The event names the connection asked for (`?events=`).
    filter: EventFilter,
    /// Fires every `--keep_alive` seconds, when set.
    keep_alive: Option<Pin<Box<Sleep>>>,
    live: LiveFeed,
    /// Completes at shutdown. Made once: a `cancelled()` future made per wake registered and
    /// unregistered on the token's one lock, shared by every open stream.
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The replay still to do: `Some(None)` latest per name, `Some(Some(n))` after `n`.
    start: Option<Option<u64>>,
    /// The newest of each name, read before the client was answered (see `settle_start`).
    latest: Option<LatestReplay>,
    /// Reading the store until it has nothing after the cursor (after a lag, or a resume).
    catching_up: bool,
    /// Highest sequence sent or deliberately skipped (covered by the latest-per-name replay).
    cursor: u64,
    /// Frames read from the store, not yet written.
    pending: VecDeque<Bytes>,
    /// The read rule's answers for this stream's user, by event name.
    answers: ReadAnswers,
    /// A resume from below the retention horizon: (the client's last id, the horizon), told to
    /// the client before the replay that takes the resume's place.
    past_horizon: Option<(u64, u64)>,
    /// Counts the stream in `broker_open_streams` while it lives.
    _open: OpenGuard,
    /// Counts the stream in its user's presence while it lives (none for the admin console).
    _joined: Option<Joined>,
    /// `?presence=true`: the tenant's present users as last sent, and their changes to come.
    presence: Option<PresenceView>,
}

struct PresenceView {
    changes: tokio::sync::watch::Receiver<Users>,
    shown: Users,
}

/// The next change of the tenant's present users; never without `?presence=true`.
async fn presence_changed(view: &mut Option<PresenceView>) -> Option<Users> {
    let Some(view) = view else {
        return std::future::pending().await;
    };
    match view.changes.changed().await {
        Ok(()) => Some(view.changes.borrow_and_update().clone()),
        Err(_) => std::future::pending().await,
    }
}

/// The frame that says a resume cannot be exact: its name is reserved (no insert can forge it) and
/// it has no `id:`, so the client's last id stays its own.
fn horizon_frame(last_event_id: u64, horizon: u64) -> Bytes {
    let data = serde_json::json!({"last_event_id": last_event_id, "horizon": horizon});
    Bytes::from(format!("event:{HORIZON_EVENT}\ndata:{data}\n\n"))
}

/// The name of the horizon frame, under the prefix reserved for Broker's own frames.
pub const HORIZON_EVENT: &str = "broker.horizon";

impl EventStream {
    /// Joins `tenant`'s live feed (before anything is read from the store, so that nothing
    /// committed in between is missed) and plans the replay.
    pub(super) fn open(
        streams: &Arc<Streams>,
        tenant: &str,
        viewer: Option<Viewer>,
        filter: EventFilter,
        resume_after: Option<u64>,
    ) -> Self {
        Self {
            streams: streams.clone(),
            tenant: tenant.to_owned(),
            live: streams
                .fanout
                .subscribe(tenant, &live_filter(&filter, viewer.as_ref())),
            viewer,
            filter,
            keep_alive: streams
                .keep_alive
                .map(|period| Box::pin(tokio::time::sleep(period))),
            shutdown: Box::pin(streams.shutdown.clone().cancelled_owned()),
            start: Some(resume_after),
            latest: None,
            catching_up: false,
            cursor: 0,
            pending: VecDeque::new(),
            answers: ReadAnswers::default(),
            past_horizon: None,
            _open: OpenGuard::new(&metrics().open_streams),
            _joined: None,
            presence: None,
        }
    }

    pub(super) fn count_in_presence(&mut self, joined: Joined) {
        self._joined = Some(joined);
    }

    /// Sends the tenant's present users after the replay, then their joins and leaves.
    pub(super) fn watch_presence(&mut self) {
        let changes = self.streams.presence.watch(&self.tenant);
        self.presence = Some(PresenceView {
            changes,
            shown: Users::default(),
        });
    }

    /// Fixes where the stream starts, after joining the live feed and before the client is
    /// answered, so that every insert committed after the answer is sent live:
    /// - a fresh stream reads the newest of each name now. Read later, at the first poll, it
    ///   would fold an insert made between the answer and that poll into a newer one of its name,
    ///   and the client that subscribed and then inserted would never see it.
    /// - an id above the tenant's newest (a typo, a restored database) means "from now": as a
    ///   filter it would hide every new event below it.
    /// - an id below the retention horizon is told to the client, then replaced by the newest of
    ///   each name, so that the client can rebuild its state.
    pub(super) async fn settle_start(&mut self) -> Result<(), StorageError> {
        if let Some(Some(after)) = self.start {
            let horizon = self.streams.events.horizon(&self.tenant).await?;
            if after < horizon {
                self.past_horizon = Some((after, horizon));
                self.start = Some(None);
            } else {
                let newest = self.streams.events.newest_seq(&self.tenant).await?;
                self.start = Some(Some(after.min(newest)));
            }
        }
        if self.start == Some(None) {
            self.latest = Some(self.streams.events.latest_events(&self.tenant).await?);
        }
        Ok(())
    }

    /// The stream as the HTTP body polls it.
    pub(super) fn frames(self) -> impl Stream<Item = Bytes> + Send + 'static {
        futures_util::stream::unfold(self, |mut stream| async move {
            let frame = stream.next_frame().await?;
            Some((frame, stream))
        })
    }

    /// Whether the stream carries an event named `name()`: the connection's filter and the
    /// viewer's scopes must both allow it. The name is asked for only when one of them filters (a
    /// live frame's name is read back from its bytes, per delivery).
    fn may_receive<'a>(&self, name: impl FnOnce() -> &'a str) -> bool {
        let scopes = self
            .viewer
            .as_ref()
            .and_then(|viewer| viewer.owner.scopes.as_deref());
        if scopes.is_none() && self.filter.is_everything() {
            return true;
        }
        let name = name();
        self.filter.matches(name) && scopes.is_none_or(|scopes| scopes::allows(scopes, name, Operation::Get))
    }

    /// Whether the tenant's read rule lets the viewer read `name` (always, for the admin console).
    async fn readable(&mut self, name: &str) -> bool {
        let Some(viewer) = &self.viewer else {
            return true;
        };
        let reader = Reader {
            username: &viewer.owner.username,
            tenant: &self.tenant,
            scopes: &viewer.owner.all_scopes,
        };
        self.answers.allows(&*self.streams.rules, &reader, name).await
    }

    /// The next bytes to write, or `None` when the stream ends.
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Some(frame);
            }
            if let Err(end) = self.step().await {
                match end {
                    End::Store(error) => {
                        tracing::error!(%error, tenant = self.tenant, "sse stream stopped by a store error");
                    }
                    end => tracing::debug!(
                        username = self
                            .viewer
                            .as_ref()
                            .map_or("(admin)", |v| v.owner.username.as_str()),
                        tenant = self.tenant,
                        ?end,
                        "sse stream ended"
                    ),
                }
                return None;
            }
        }
    }

    /// Does one unit of work: the replay, one catch-up page, or waiting for the next live event.
    async fn step(&mut self) -> Result<(), End> {
        if let Some(start) = self.start.take() {
            return self.replay(start).await;
        }
        if self.catching_up {
            return self.catch_up_page().await;
        }
        // Biased: a user change is taken before a live frame, so a scope change or revoke that
        // was announced before an insert applies to that insert's frame.
        tokio::select! {
            biased;
            () = self.shutdown.as_mut() => Err(End::ShuttingDown),
            news = viewer_news(&mut self.viewer) => match news {
                ViewerNews::CredentialExpired => Err(End::CredentialsExpired),
                ViewerNews::UserChanged => self.check_user().await,
                ViewerNews::WatchClosed => Err(End::ShuttingDown),
            },
            users = presence_changed(&mut self.presence) => {
                if let (Some(view), Some(users)) = (self.presence.as_mut(), users) {
                    let frames = presence::change_frames(&view.shown, &users);
                    view.shown = users;
                    self.pending.extend(frames);
                }
                Ok(())
            }
            received = self.live.receiver.recv() => match received {
                Ok(frame) => {
                    self.push_if_new(frame).await;
                    Ok(())
                }
                Err(RecvError::Lagged(missed)) => {
                    metrics().lag_recoveries.inc();
                    tracing::debug!(missed, tenant = self.tenant, "sse subscriber lagged; catching up from the store");
                    self.catching_up = true;
                    Ok(())
                }
                Err(RecvError::Closed) => Err(End::ShuttingDown),
            },
            () = keep_alive_tick(&mut self.keep_alive) => {
                if let (Some(timer), Some(period)) = (self.keep_alive.as_mut(), self.streams.keep_alive) {
                    timer.as_mut().reset(tokio::time::Instant::now() + period);
                }
                self.pending.push_back(Bytes::from_static(b":\n\n"));
                Ok(())
            }
        }
    }

    async fn replay(&mut self, resume_after: Option<u64>) -> Result<(), End> {
        let events = self.streams.events.clone();
        match resume_after {
            Some(after) => {
                // Settled by `settle_resume_point` before the stream was answered.
                self.cursor = after;
                self.catching_up = true;
            }
            None => {
                if let Some((after, horizon)) = self.past_horizon.take() {
                    self.deliver(horizon_frame(after, horizon));
                }
                let replay = match self.latest.take() {
                    Some(replay) => replay,
                    None => events.latest_events(&self.tenant).await.map_err(End::Store)?,
                };
                for event in &replay.events {
                    if self.may_receive(|| &event.event) && self.readable(&event.event).await {
                        self.deliver(Frame::render(event).bytes);
                    }
                }
                self.cursor = replay.last_seq;
            }
        }
        if let Some(view) = self.presence.as_mut() {
            view.shown = view.changes.borrow_and_update().clone();
            self.pending.push_back(presence::snapshot_frame(&view.shown));
        }
        Ok(())
    }

    /// Reads one page of stored events after the cursor; the catch-up ends with a short page.
    async fn catch_up_page(&mut self) -> Result<(), End> {
        let events = &self.streams.events;
        let page = events
            .events_after(&self.tenant, self.cursor, STORE_PAGE, STORE_PAGE_BYTES)
            .await
            .map_err(End::Store)?;
        // Retention may have removed events after the cursor since the stream began (a long
        // catch-up, a lag): the page would skip them without a word. Read after the page, the
        // horizon covers whatever the page missed. As at a resume from below the horizon, the
        // client is told, then gets the newest of each name.
        let horizon = events.horizon(&self.tenant).await.map_err(End::Store)?;
        if horizon > self.cursor {
            self.deliver(horizon_frame(self.cursor, horizon));
            self.catching_up = false;
            self.start = Some(None);
            return Ok(());
        }
        self.catching_up = page.events.len() == STORE_PAGE || page.bytes >= STORE_PAGE_BYTES;
        for event in &page.events {
            if event.seq > self.cursor {
                self.cursor = event.seq;
                if self.may_receive(|| &event.event) && self.readable(&event.event).await {
                    self.deliver(Frame::render(event).bytes);
                }
            }
        }
        Ok(())
    }

    /// Queues a live frame unless it was already sent or skipped; a frame the scopes or the read
    /// rule do not allow is skipped, but still moves the cursor.
    async fn push_if_new(&mut self, frame: Frame) {
        if frame.seq > self.cursor {
            self.cursor = frame.seq;
            if self.may_receive(|| frame.event_name()) && self.readable(frame.event_name()).await {
                self.deliver(frame.bytes);
            }
        }
    }

    /// Queues one event frame for writing.
    fn deliver(&mut self, frame: Bytes) {
        metrics().deliveries.inc();
        self.pending.push_back(frame);
    }

    /// Ends the stream if the user was revoked, moved or had its credentials changed; otherwise
    /// takes its current scopes (ending the stream if they no longer allow receiving anything).
    async fn check_user(&mut self) -> Result<(), End> {
        let Some(viewer) = self.viewer.as_mut() else {
            return Ok(());
        };
        let owner = &mut viewer.owner;
        let current = self
            .streams
            .users
            .get(&owner.username)
            .await
            .map_err(End::Store)?;
        if !owner.still_allowed(current.as_ref()) {
            return Err(End::UserChanged);
        }
        if owner.scopes.is_some() && !owner.take_scopes(current.as_ref()) {
            return Err(End::ScopesRemoved);
        }
        // The read rule sees the scopes: ask it again.
        owner.all_scopes = current
            .as_ref()
            .map(|user| user.scope_list().to_vec())
            .unwrap_or_default();
        self.answers.forget();
        if self.presence.is_some() {
            let streams = self.streams.clone();
            let owner = &self.viewer.as_ref().expect("a user's stream").owner;
            if !streams
                .may_see_presence(&owner.username, &self.tenant, &owner.all_scopes)
                .await
            {
                // No longer allowed: no more presence frames on this stream.
                self.presence = None;
            }
        }
        // New scopes may reach other names: join their channel, then read from the store what
        // was committed since the cursor, so nothing the new scopes allow is missed.
        let filter = live_filter(&self.filter, self.viewer.as_ref());
        if &filter != self.live.filter() {
            self.live = self.streams.fanout.subscribe(&self.tenant, &filter);
            self.catching_up = true;
        }
        Ok(())
    }
}

/// The names a stream's live channel carries: its filter, narrowed to the names its viewer's `get`
/// scopes cover (with `--enforce_scopes`).
fn live_filter(filter: &EventFilter, viewer: Option<&Viewer>) -> EventFilter {
    match viewer.and_then(|viewer| viewer.owner.scopes.as_deref()) {
        Some(scopes) => scopes::receivable(filter, scopes),
        None => filter.clone(),
    }
}
