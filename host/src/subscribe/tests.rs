//! The stream state machine on an in-memory event log and user directory, on paused tokio time:
//! replay, resume, catch-up after a lag, a skipped event still moving the cursor, and the ends
//! (revocation, credential expiry, shutdown). The end-to-end suite runs the same over HTTP.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Streams, SubscribeError};
use crate::auth::Identity;
use crate::clock::Clock;
use crate::event_log::{Erase, EventLog, EventPage, HistoryPage, Keep, LatestReplay, PageStart};
use crate::fanout::Fanout;
use crate::filter::EventFilter;
use crate::model::{Event, NewEvent, User};
use crate::read_rule::{ReadRule, Reader};
use crate::storage::StorageResult;
use crate::user_directory::{UserChange, UserDirectory};

const TENANT: &str = "t";

/// Events in memory, numbered per tenant and handed to the fan-out once appended, as the LMDB
/// writer does.
struct MemoryLog {
    events: Mutex<Vec<Arc<Event>>>,
    fanout: Arc<Fanout>,
    /// The highest sequence `trim` removed, per tenant.
    horizons: Mutex<HashMap<String, u64>>,
}

impl MemoryLog {
    fn of(&self, tenant: &str) -> Vec<Arc<Event>> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|e| e.tenant_name == tenant)
            .cloned()
            .collect()
    }
}

#[async_trait::async_trait]
impl EventLog for MemoryLog {
    async fn append(&self, event: NewEvent) -> StorageResult<Arc<Event>> {
        let newest = self.of(&event.tenant_name).last().map_or(0, |e| e.seq);
        let seq = newest + 1;
        let event = Arc::new(Event::from_new(event, seq));
        self.events.lock().unwrap().push(event.clone());
        self.fanout.publish([&*event]);
        Ok(event)
    }

    async fn events_after(
        &self,
        tenant: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> StorageResult<EventPage> {
        let mut page = EventPage::default();
        for event in self.of(tenant).into_iter().filter(|e| e.seq > after) {
            if page.events.len() >= limit || page.bytes >= max_bytes {
                break;
            }
            page.bytes += event.data.to_string().len();
            page.events.push((*event).clone());
        }
        Ok(page)
    }

    async fn history(
        &self,
        tenant: &str,
        filter: &EventFilter,
        start: PageStart,
        limit: usize,
        _max_bytes: usize,
    ) -> StorageResult<HistoryPage> {
        let mut matching: Vec<Event> = (self.of(tenant).iter())
            .filter(|e| filter.matches(&e.event))
            .filter(|e| match start {
                PageStart::Before(before) => e.seq < before,
                PageStart::After(after) => e.seq > after,
            })
            .map(|e| (**e).clone())
            .collect();
        if matches!(start, PageStart::Before(_)) {
            matching.reverse();
        }
        let more = matching.len() > limit;
        matching.truncate(limit);
        Ok(HistoryPage {
            events: matching,
            more,
        })
    }

    async fn latest_events(&self, tenant: &str) -> StorageResult<LatestReplay> {
        let events = self.of(tenant);
        let mut newest: HashMap<&str, &Arc<Event>> = HashMap::new();
        for event in &events {
            newest.insert(&event.event, event);
        }
        let mut replay: Vec<Event> = newest.values().map(|e| (***e).clone()).collect();
        replay.sort_by_key(|e| e.seq);
        Ok(LatestReplay {
            events: replay,
            last_seq: events.last().map_or(0, |e| e.seq),
        })
    }

    async fn newest_seq(&self, tenant: &str) -> StorageResult<u64> {
        Ok(self.of(tenant).last().map_or(0, |e| e.seq))
    }

    async fn latest_of(&self, tenant: &str, name: &str) -> StorageResult<Option<Event>> {
        Ok(self
            .of(tenant)
            .iter()
            .rev()
            .find(|e| e.event == name)
            .map(|e| (**e).clone()))
    }

    async fn committed_with(
        &self,
        _key: &crate::idempotency::IdempotencyKey,
    ) -> StorageResult<Option<Event>> {
        Ok(None)
    }

    async fn erase(&self, _which: Erase) -> StorageResult<u64> {
        Ok(0)
    }

    /// Keeps the newest `keep.per_name` of each name (the only rule these tests use).
    async fn trim(&self, keep: Keep) -> StorageResult<u64> {
        let Some(newest) = keep.per_name else {
            return Ok(0);
        };
        let mut events = self.events.lock().unwrap();
        let mut seen: HashMap<(String, String), u32> = HashMap::new();
        let mut removed = Vec::new();
        for event in events.iter().rev() {
            let count = seen
                .entry((event.tenant_name.clone(), event.event.clone()))
                .or_default();
            *count += 1;
            if *count > newest {
                removed.push((event.tenant_name.clone(), event.seq));
            }
        }
        events.retain(|event| !removed.contains(&(event.tenant_name.clone(), event.seq)));
        let mut horizons = self.horizons.lock().unwrap();
        for (tenant, seq) in &removed {
            let horizon = horizons.entry(tenant.clone()).or_default();
            *horizon = (*horizon).max(*seq);
        }
        Ok(removed.len() as u64)
    }

    async fn horizon(&self, tenant: &str) -> StorageResult<u64> {
        Ok(self.horizons.lock().unwrap().get(tenant).copied().unwrap_or(0))
    }

    async fn stored_bytes(&self, _tenant: &str) -> StorageResult<Option<u64>> {
        Ok(None)
    }

    async fn stopped(&self) {
        std::future::pending().await
    }
}

/// Users in memory; every change is announced to the fan-out, as both real directories do.
struct MemoryUsers {
    users: Mutex<HashMap<String, User>>,
    fanout: Arc<Fanout>,
}

#[async_trait::async_trait]
impl UserDirectory for MemoryUsers {
    async fn get(&self, username: &str) -> StorageResult<Option<User>> {
        Ok(self.users.lock().unwrap().get(username).cloned())
    }

    async fn list(&self) -> StorageResult<Vec<User>> {
        Ok(self.users.lock().unwrap().values().cloned().collect())
    }

    async fn create(&self, user: User) -> StorageResult<bool> {
        let mut users = self.users.lock().unwrap();
        if users.contains_key(&user.username) {
            return Ok(false);
        }
        users.insert(user.username.clone(), user);
        Ok(true)
    }

    async fn update_if(&self, username: &str, change: UserChange) -> StorageResult<Option<User>> {
        let updated = {
            let mut users = self.users.lock().unwrap();
            let Some(user) = users.get_mut(username) else {
                return Ok(None);
            };
            if !change(user) {
                return Ok(None);
            }
            user.revision += 1;
            user.clone()
        };
        self.fanout.user_changed(username);
        Ok(Some(updated))
    }

    async fn delete(&self, username: &str) -> StorageResult<Option<User>> {
        let deleted = self.users.lock().unwrap().remove(username);
        self.fanout.user_changed(username);
        Ok(deleted)
    }

    async fn shared_value(&self, _key: &str, init: Vec<u8>) -> StorageResult<Vec<u8>> {
        Ok(init)
    }

    async fn value(&self, _key: &str) -> StorageResult<Option<Vec<u8>>> {
        Ok(None)
    }

    async fn set_value(&self, _key: &str, _value: Vec<u8>) -> StorageResult<()> {
        Ok(())
    }

    async fn replace_value(
        &self,
        _key: &str,
        _expected: Option<Vec<u8>>,
        _value: Vec<u8>,
    ) -> StorageResult<bool> {
        Ok(false)
    }
}

/// A read rule in memory: names starting with `secret` only for `ann`, with `vip` only for holders
/// of `vip:get`; counts its calls, and its generation is moved by hand (as a new guest file does).
#[derive(Default)]
struct SecretsForAnn {
    calls: std::sync::atomic::AtomicUsize,
    generation: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl ReadRule for SecretsForAnn {
    fn applies(&self, _tenant: &str) -> bool {
        true
    }

    async fn allows(&self, reader: &Reader<'_>, name: &str) -> bool {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let vip = reader.scopes.iter().any(|scope| scope == "vip:get");
        (!name.starts_with("secret") || reader.username == "ann") && (!name.starts_with("vip") || vip)
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }
}

struct World {
    streams: Arc<Streams>,
    rule: Arc<SecretsForAnn>,
    log: Arc<MemoryLog>,
    users: Arc<MemoryUsers>,
    clock: Arc<Clock>,
    shutdown: CancellationToken,
}

fn world(live_buffer: usize, enforce_scopes: bool) -> World {
    let fanout = Arc::new(Fanout::new(live_buffer));
    let log = Arc::new(MemoryLog {
        events: Mutex::default(),
        fanout: fanout.clone(),
        horizons: Mutex::default(),
    });
    let users = Arc::new(MemoryUsers {
        users: Mutex::default(),
        fanout: fanout.clone(),
    });
    let clock = Arc::new(Clock::default());
    let shutdown = CancellationToken::new();
    let rule = Arc::new(SecretsForAnn::default());
    let streams = Arc::new(Streams::new(
        log.clone(),
        users.clone(),
        rule.clone(),
        fanout,
        crate::presence::Presence::start(None, clock.clone(), shutdown.clone()),
        clock.clone(),
        shutdown.clone(),
        None,
        enforce_scopes,
    ));
    World {
        streams,
        rule,
        log,
        users,
        clock,
        shutdown,
    }
}

impl World {
    async fn add_user(&self, username: &str, scopes: &[&str]) -> Identity {
        let user = User {
            id: Uuid::new_v4(),
            username: username.to_owned(),
            password_hash: String::new(),
            revoked: false,
            tenant_name: TENANT.to_owned(),
            email: None,
            scopes: Some(scopes.iter().map(|s| (*s).to_owned()).collect()),
            data: None,
            two_factor: false,
            totp_secret: None,
            last_totp_step: None,
            reset: None,
            revision: 0,
            credential_generation: 0,
        };
        assert!(self.users.create(user.clone()).await.unwrap());
        Identity {
            user,
            expiry: self.clock.now_secs() + 3600,
        }
    }

    async fn insert(&self, name: &str, data: Value) -> u64 {
        let new = NewEvent {
            tenant_name: TENANT.to_owned(),
            username: "writer".to_owned(),
            event: name.to_owned(),
            data,
            timestamp: 0,
            reads: Vec::new(),
            idempotency_key: None,
            tenant_max_bytes: 0,
        };
        self.log.append(new).await.unwrap().seq
    }

    async fn open(&self, identity: &Identity, resume_after: Option<u64>) -> Frames {
        self.open_filtered(identity, "*", resume_after).await
    }

    async fn open_filtered(&self, identity: &Identity, filter: &str, resume_after: Option<u64>) -> Frames {
        let filter = EventFilter::parse(filter).unwrap();
        let frames = self
            .streams
            .subscribe(identity, filter, resume_after, false)
            .await
            .unwrap();
        Frames(Box::pin(frames))
    }

    async fn set_scopes(&self, username: &str, scopes: &[&str]) {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        let change = Box::new(move |user: &mut User| {
            user.scopes = Some(scopes.clone());
            true
        });
        self.users.update_if(username, change).await.unwrap();
    }
}

/// A stream's frames, read as a client reads them.
struct Frames(Pin<Box<dyn Stream<Item = Bytes> + Send>>);

impl Frames {
    /// The next frame's (event name, id); panics if none comes within a minute of paused time.
    async fn next(&mut self) -> (String, u64) {
        let frame = tokio::time::timeout(Duration::from_secs(60), self.0.next())
            .await
            .expect("a frame within a minute")
            .expect("the stream is open");
        let text = std::str::from_utf8(&frame).unwrap();
        let mut lines = text.lines();
        let name = lines.next().unwrap().strip_prefix("event:").unwrap().to_owned();
        let id = lines
            .next()
            .unwrap()
            .strip_prefix("id:")
            .unwrap()
            .parse()
            .unwrap();
        (name, id)
    }

    async fn ids(&mut self, count: usize) -> Vec<u64> {
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            ids.push(self.next().await.1);
        }
        ids
    }

    /// Whether the stream ends within `wait` (of paused time), having sent nothing more.
    async fn ends_within(&mut self, wait: Duration) -> bool {
        match tokio::time::timeout(wait, self.0.next()).await {
            Ok(None) => true,
            Ok(Some(frame)) => panic!("a frame instead of the end: {frame:?}"),
            Err(_) => false,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_replay_is_the_newest_of_each_name_oldest_first_then_live() {
    let world = world(16, false);
    let ann = world.add_user("ann", &[]).await;
    world.insert("a", json!(1)).await;
    world.insert("b", json!(2)).await;
    world.insert("a", json!(3)).await;
    let mut frames = world.open(&ann, None).await;
    assert_eq!(frames.next().await, ("b".to_owned(), 2));
    assert_eq!(frames.next().await, ("a".to_owned(), 3));
    world.insert("c", json!(4)).await;
    assert_eq!(frames.next().await, ("c".to_owned(), 4));
}

#[tokio::test(start_paused = true)]
async fn inserts_after_the_answer_are_all_sent_even_of_one_name_before_the_first_poll() {
    let world = world(16, false);
    let ann = world.add_user("ann", &[]).await;
    world.insert("a", json!(1)).await;
    // The client has its answer (the stream is open) and inserts before its body is first read:
    // each insert is news to it, not folded into the newest "a" of a replay read later.
    let mut frames = world.open(&ann, None).await;
    world.insert("a", json!(2)).await;
    world.insert("a", json!(3)).await;
    assert_eq!(frames.ids(3).await, [1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_resume_sends_everything_after_the_id_then_live_without_a_repeat() {
    let world = world(16, false);
    let ann = world.add_user("ann", &[]).await;
    for n in 1..=5 {
        world.insert("e", json!(n)).await;
    }
    let mut frames = world.open(&ann, Some(2)).await;
    assert_eq!(frames.ids(3).await, [3, 4, 5]);
    world.insert("e", json!(6)).await;
    assert_eq!(frames.next().await.1, 6);
    // An id above the newest means "from now", as of the answer: an insert committed before
    // the stream is first polled is still sent.
    let mut ahead = world.open(&ann, Some(1000)).await;
    world.insert("e", json!(7)).await;
    assert_eq!(ahead.next().await.1, 7);
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_falls_behind_catches_up_from_the_log_with_no_gap() {
    // A live buffer of 2: ten inserts while the stream is not read overflow it.
    let world = world(2, false);
    let ann = world.add_user("ann", &[]).await;
    let mut frames = world.open(&ann, None).await;
    // The (empty) replay is done on the first poll; then ten inserts while nothing reads.
    assert!(!frames.ends_within(Duration::from_millis(10)).await);
    for n in 1..=10 {
        world.insert("e", json!(n)).await;
    }
    assert_eq!(frames.ids(10).await, (1..=10).collect::<Vec<_>>());
    world.insert("e", json!(11)).await;
    assert_eq!(frames.next().await.1, 11, "live again after the catch-up");
}

#[tokio::test(start_paused = true)]
async fn a_catch_up_past_events_retention_removed_says_so_then_replays() {
    // A live buffer of 2: ten inserts while the stream is not read overflow it, and retention
    // removes all but the newest "a" before the stream catches up.
    let world = world(2, false);
    let ann = world.add_user("ann", &[]).await;
    world.insert("b", json!(0)).await;
    let mut frames = world.open(&ann, None).await;
    assert_eq!(frames.next().await, ("b".to_owned(), 1));
    for n in 1..=10 {
        world.insert("a", json!(n)).await;
    }
    let keep = Keep {
        per_name: Some(1),
        ..Keep::default()
    };
    assert_eq!(world.log.trim(keep).await.unwrap(), 9);
    let told = tokio::time::timeout(Duration::from_secs(60), frames.0.next()).await;
    let told = told.unwrap().unwrap();
    assert_eq!(
        std::str::from_utf8(&told).unwrap(),
        "event:broker.horizon\ndata:{\"horizon\":10,\"last_event_id\":1}\n\n",
        "ids 2 to 10 are gone: the client is told before anything else"
    );
    assert_eq!(frames.next().await, ("b".to_owned(), 1));
    assert_eq!(frames.next().await, ("a".to_owned(), 11));
    world.insert("a", json!(11)).await;
    assert_eq!(frames.next().await.1, 12, "live again");
}

#[tokio::test(start_paused = true)]
async fn an_event_the_scopes_skip_still_moves_the_cursor() {
    let world = world(16, true);
    let ann = world.add_user("ann", &["a:get"]).await;
    world.insert("a", json!(1)).await;
    world.insert("b", json!(2)).await;
    let mut frames = world.open(&ann, Some(0)).await;
    assert_eq!(frames.next().await, ("a".to_owned(), 1));
    world.insert("b", json!(3)).await;
    world.insert("a", json!(4)).await;
    assert_eq!(
        frames.next().await,
        ("a".to_owned(), 4),
        "b skipped, live and stored"
    );
    // A user with no get scope at all cannot open a stream.
    let none = world.add_user("nobody", &["a:post"]).await;
    assert!(matches!(
        world
            .streams
            .subscribe(&none, EventFilter::default(), None, false)
            .await
            .err(),
        Some(SubscribeError::Forbidden)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_filtered_stream_gets_its_names_and_catches_up_after_a_lag() {
    // A live buffer of 2 for every channel: three frames unread make a stream lag.
    let world = world(2, false);
    let ann = world.add_user("ann", &[]).await;
    let mut room = world.open_filtered(&ann, "room.1.*,profile", None).await;
    assert!(!room.ends_within(Duration::from_millis(10)).await);
    world.insert("room.2.msg", json!(0)).await;
    let seq = world.insert("room.1.msg", json!("hi")).await;
    assert_eq!(room.next().await, ("room.1.msg".to_owned(), seq));
    assert!(!room.ends_within(Duration::from_millis(10)).await, "idle again");
    let mut expected = Vec::new();
    for n in 0..10 {
        world.insert("room.2.msg", json!(n)).await;
        expected.push(world.insert("room.1.msg", json!(n)).await);
    }
    expected.push(world.insert("profile", json!("p")).await);
    assert_eq!(room.ids(11).await, expected, "the gap is read back from the log");
    let lagged = world.insert("room.1.msg", json!("live")).await;
    assert_eq!(room.next().await.1, lagged, "live again after the catch-up");
    assert_eq!(world.streams.fanout.live_channels(TENANT), 1);
    drop(room);
    assert_eq!(world.streams.fanout.live_tenants(), 0);
}

#[tokio::test(start_paused = true)]
async fn new_scopes_reach_the_open_stream_at_once() {
    let world = world(16, true);
    let ann = world.add_user("ann", &["chat:get"]).await;
    let mut frames = world.open(&ann, None).await;
    assert!(!frames.ends_within(Duration::from_millis(10)).await);
    world.insert("news", json!(1)).await;
    let chat = world.insert("chat", json!(2)).await;
    assert_eq!(frames.next().await, ("chat".to_owned(), chat));
    world.set_scopes("ann", &["news:get"]).await;
    world.insert("chat", json!(3)).await;
    let news = world.insert("news", json!(4)).await;
    assert_eq!(
        frames.next().await,
        ("news".to_owned(), news),
        "chat no longer, news now"
    );
    world.set_scopes("ann", &["*:get"]).await;
    let chat = world.insert("chat", json!(5)).await;
    assert_eq!(frames.next().await, ("chat".to_owned(), chat));
}

#[tokio::test(start_paused = true)]
async fn the_read_rule_governs_replay_live_and_resume_asked_once_per_name() {
    let world = world(16, false);
    let ann = world.add_user("ann", &[]).await;
    let bob = world.add_user("bob", &[]).await;
    world.insert("secret.plan", json!(1)).await;
    world.insert("news", json!(2)).await;
    let mut anns = world.open(&ann, None).await;
    let mut bobs = world.open(&bob, None).await;
    assert_eq!(anns.ids(2).await, [1, 2]);
    assert_eq!(
        bobs.next().await,
        ("news".to_owned(), 2),
        "the replay leaves the secret out"
    );
    for n in 3..=6 {
        world
            .insert(if n % 2 == 1 { "secret.plan" } else { "news" }, json!(n))
            .await;
    }
    assert_eq!(anns.ids(4).await, [3, 4, 5, 6]);
    assert_eq!(bobs.next().await.1, 4, "live too");
    assert_eq!(bobs.next().await.1, 6);
    let mut resumed = world.open(&bob, Some(0)).await;
    assert_eq!(resumed.ids(3).await, [2, 4, 6], "and on resume");
    let calls = world.rule.calls.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(calls, 6, "once per stream and name: three streams, two names");
    // A new rule (a guest file changed) is asked again, once per name.
    world
        .rule
        .generation
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    world.insert("news", json!(7)).await;
    assert_eq!(bobs.next().await.1, 7);
    assert_eq!(
        world.rule.calls.load(std::sync::atomic::Ordering::Relaxed),
        calls + 1
    );
}

#[tokio::test(start_paused = true)]
async fn a_scope_change_asks_the_read_rule_again() {
    let world = world(16, false);
    let bob = world.add_user("bob", &[]).await;
    let mut frames = world.open(&bob, None).await;
    assert!(!frames.ends_within(Duration::from_millis(10)).await);
    world.insert("vip.news", json!(1)).await;
    let open = world.insert("news", json!(2)).await;
    assert_eq!(frames.next().await.1, open, "vip.news denied without the scope");
    world.set_scopes("bob", &["vip:get"]).await;
    let vip = world.insert("vip.news", json!(3)).await;
    assert_eq!(
        frames.next().await,
        ("vip.news".to_owned(), vip),
        "asked again with the new scope"
    );
}

#[tokio::test(start_paused = true)]
async fn a_revoke_ends_the_users_stream_and_not_another() {
    let world = world(16, false);
    let ann = world.add_user("ann", &[]).await;
    let bob = world.add_user("bob", &[]).await;
    let mut anns = world.open(&ann, None).await;
    let mut bobs = world.open(&bob, None).await;
    let first = world.insert("e", json!(1)).await;
    assert_eq!(anns.next().await.1, first);
    assert_eq!(bobs.next().await.1, first);
    let revoke = Box::new(|user: &mut User| {
        user.revoked = true;
        true
    });
    world.users.update_if("ann", revoke).await.unwrap();
    assert!(anns.ends_within(Duration::from_secs(1)).await);
    // A data-only change ends nothing.
    let data_only = Box::new(|user: &mut User| {
        user.data = Some(json!({"x": 1}));
        true
    });
    world.users.update_if("bob", data_only).await.unwrap();
    let second = world.insert("e", json!(2)).await;
    assert_eq!(bobs.next().await.1, second);
    // The revoked user cannot open a new stream with the old identity.
    assert!(matches!(
        world
            .streams
            .subscribe(&ann, EventFilter::default(), None, false)
            .await
            .err(),
        Some(SubscribeError::UserChanged)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_stream_ends_when_its_credential_expires_and_not_before() {
    let world = world(16, false);
    let mut ann = world.add_user("ann", &[]).await;
    ann.expiry = world.clock.now_secs() + 60;
    let mut frames = world.open(&ann, None).await;
    assert!(
        !frames.ends_within(Duration::from_secs(55)).await,
        "still open at 55 s"
    );
    let seq = world.insert("e", json!(1)).await;
    assert_eq!(frames.next().await.1, seq);
    assert!(frames.ends_within(Duration::from_secs(10)).await, "ended at 60 s");
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_every_stream() {
    let world = world(16, false);
    let ann = world.add_user("ann", &[]).await;
    let mut frames = world.open(&ann, None).await;
    world.shutdown.cancel();
    assert!(frames.ends_within(Duration::from_secs(1)).await);
}
