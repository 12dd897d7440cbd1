//! A strict reader of Broker's SSE wire format: `event:<name>\nid:<seq>\ndata:<json>\n\n`.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub id: u64,
    pub data: Value,
}

pub struct SseStream {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: Vec<u8>,
    pub ended: bool,
}

/// How long a test waits for an event that should arrive.
pub const ARRIVAL: Duration = Duration::from_secs(15);

impl SseStream {
    pub fn new(response: reqwest::Response) -> Self {
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(content_type, "text/event-stream");
        Self {
            body: response.bytes_stream().boxed(),
            buffer: Vec::new(),
            ended: false,
        }
    }

    /// The next event, or None when the stream ends or `wait` passes first.
    pub async fn next_within(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.buffer.drain(..end + 2).collect();
                return Some(parse_frame(&frame[..end]));
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(chunk))) => self.buffer.extend_from_slice(&chunk),
                Ok(Some(Err(_)) | None) => self.ended = true,
            }
        }
    }

    /// The next event; fails the test if none arrives in time.
    pub async fn next(&mut self) -> SseEvent {
        self.next_within(ARRIVAL)
            .await
            .expect("an SSE event within the time limit")
    }

    /// `count` events, in arrival order.
    pub async fn take(&mut self, count: usize) -> Vec<SseEvent> {
        let mut events = Vec::with_capacity(count);
        for _ in 0..count {
            events.push(self.next().await);
        }
        events
    }

    /// Asserts nothing arrives for `wait`.
    pub async fn expect_quiet(&mut self, wait: Duration) {
        if let Some(event) = self.next_within(wait).await {
            panic!("unexpected SSE event {event:?}");
        }
    }

    /// Whether the server ends the stream within `wait` (with no further events).
    pub async fn ends_within(&mut self, wait: Duration) -> bool {
        match self.next_within(wait).await {
            Some(event) => panic!("expected the stream to end, got {event:?}"),
            None => self.ended,
        }
    }
}

/// An event frame: event, id and data lines; Broker's own frames (`broker.…`, such as the
/// retention horizon) carry no id, and are read with id 0.
fn parse_frame(frame: &[u8]) -> SseEvent {
    let text = std::str::from_utf8(frame).expect("utf-8 frame");
    let lines: Vec<&str> = text.split('\n').collect();
    let (event, id, data) = match lines[..] {
        [event, id, data] => (
            event,
            id.strip_prefix("id:")
                .expect("id line")
                .parse()
                .expect("numeric id"),
            data,
        ),
        [event, data] if event.starts_with("event:broker.") => (event, 0, data),
        _ => panic!("frame is not exactly event/id/data lines: {text:?}"),
    };
    SseEvent {
        event: event.strip_prefix("event:").expect("event line").to_owned(),
        id,
        data: serde_json::from_str(data.strip_prefix("data:").expect("data line")).expect("JSON data"),
    }
}
