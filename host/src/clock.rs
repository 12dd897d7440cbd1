//! Broker's notion of "now", for JWT `iat`/`exp` and event timestamps. It is the local clock plus an
//! offset, so that a network-time source can correct it without touching the callers.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Default)]
pub struct Clock {
    /// Milliseconds to add to the local clock.
    offset_ms: AtomicI64,
}

impl Clock {
    pub fn set_offset_ms(&self, offset: i64) {
        self.offset_ms.store(offset, Ordering::Relaxed);
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_millis(&self) -> u64 {
        let local = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let local = i64::try_from(local).unwrap_or(i64::MAX);
        u64::try_from(local.saturating_add(self.offset_ms.load(Ordering::Relaxed))).unwrap_or(0)
    }

    /// Seconds since the Unix epoch.
    pub fn now_secs(&self) -> u64 {
        self.now_millis() / 1000
    }
}

/// How long one NTP server gets to answer.
const NTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// How soon to ask again after no server answered.
const NTP_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

/// Keeps `clock` corrected by NTP: asks `servers` (host:port, in order) now and every `interval`.
/// With no answer the local clock stays in use, said once in the log, and the asking goes on.
/// Runs until `shutdown`; never blocks start-up.
pub async fn sync_with_ntp(
    clock: std::sync::Arc<Clock>,
    servers: Vec<String>,
    interval: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    if servers.is_empty() {
        tracing::info!("no NTP servers configured; using the local clock");
        return;
    }
    let mut said_fallback = false;
    let mut synchronised = false;
    loop {
        let wait = match query_any(&servers).await {
            Some((server, offset_us)) => {
                clock.set_offset_ms(offset_us / 1000);
                if !synchronised {
                    tracing::info!(
                        server,
                        offset_ms = offset_us / 1000,
                        "clock synchronised with NTP"
                    );
                }
                (synchronised, said_fallback) = (true, false);
                interval
            }
            None => {
                if !said_fallback {
                    tracing::warn!(
                        ?servers,
                        "no NTP server answered; using the local clock and retrying"
                    );
                    said_fallback = true;
                }
                synchronised = false;
                NTP_RETRY.min(interval)
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The first server's clock offset in microseconds, trying each in turn.
async fn query_any(servers: &[String]) -> Option<(String, i64)> {
    for server in servers {
        match tokio::time::timeout(NTP_TIMEOUT, query(server)).await {
            Ok(Ok(offset)) => return Some((server.clone(), offset)),
            Ok(Err(error)) => tracing::debug!(server, error, "NTP query failed"),
            Err(_) => tracing::debug!(server, "NTP query timed out"),
        }
    }
    None
}

async fn query(server: &str) -> Result<i64, String> {
    let address = tokio::net::lookup_host(server)
        .await
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let bind = if address.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| e.to_string())?;
    let socket = sntpc_net_tokio::UdpSocketWrapper::new(socket);
    let context = sntpc::NtpContext::new(sntpc::StdTimestampGen::default());
    let result = sntpc::get_time(address, &socket, context)
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(result.offset())
}
