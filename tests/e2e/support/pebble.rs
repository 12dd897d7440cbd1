//! Debian's `pebble` ACME test server, started on loopback for one test: its own HTTPS listener
//! uses a certificate from a test CA (which Broker's ACME client is told to trust with `--acme_ca`),
//! and it validates TLS-ALPN-01 challenges for real by connecting to the port Broker serves HTTPS on.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::json;
use tempfile::TempDir;

use super::tls::{TestCa, client_trusting};

pub struct Pebble {
    child: Child,
    _dir: TempDir,
    log: Arc<Mutex<String>>,
    /// The ACME directory URL.
    pub directory: String,
    /// PEM of the CA that signed pebble's own HTTPS certificate (for `--acme_ca`).
    pub listener_ca_path: PathBuf,
    /// PEM of the root pebble issues certificates under: what a Broker client must trust.
    pub issuing_root: String,
}

/// A loopback port that was free a moment ago, for a server a test starts on it. Taken below
/// Linux's ephemeral range (32768 and up), where the kernel never picks the local port of an
/// outgoing connection: one picked there could be taken by such a connection (nats-server's
/// routes dialling each other) before the server binds it. Never the same port twice in a run.
pub fn free_port() -> u16 {
    const FIRST: u16 = 20_000;
    const COUNT: u16 = 12_000;
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    // Each run starts elsewhere in the range, so runs side by side rarely meet.
    static START: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| (std::process::id() % u32::from(COUNT)) as u16);
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = FIRST + (start + n % COUNT) % COUNT;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Pebble {
    /// Starts pebble validating TLS-ALPN-01 on `validation_port`, or returns `None` (printing why)
    /// where pebble is not installed.
    pub async fn start(validation_port: u16) -> Self {
        Self::start_issuing_for(validation_port, None).await
    }

    /// Like `start`, issuing certificates valid for `validity_secs` (pebble's default: five years).
    pub async fn start_issuing_for(validation_port: u16, validity_secs: Option<u64>) -> Self {
        // scripts/test installs pebble: a machine without it fails this test rather than skipping it.
        assert!(
            Command::new("pebble").arg("-h").output().is_ok(),
            "the `pebble` ACME test server is not installed (apt-get install pebble; scripts/test installs it)"
        );
        let dir = TempDir::new().unwrap();
        let ca = TestCa::new("pebble listener CA");
        let listener = ca.issue(&["localhost", "127.0.0.1"]);
        let (key_path, cert_path) = listener.write(dir.path());
        let listener_ca_path = dir.path().join("listener-ca.pem");
        std::fs::write(&listener_ca_path, ca.pem()).unwrap();
        let (acme_port, management_port) = (free_port(), free_port());
        let config = json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": cert_path,
            "privateKey": key_path,
            "httpPort": free_port(),
            "tlsPort": validation_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let mut config = config;
        if let Some(validity) = validity_secs {
            config["pebble"]["certificateValidityPeriod"] = json!(validity);
        }
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();

        let mut child = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            // No random validation delays and no nonce rejections: the test is about Broker.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting pebble");
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("ACME directory available at") {
                    let _ = ready_tx.send(());
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        // From here on a failed assertion drops `pebble`, which stops the process.
        let mut pebble = Self {
            child,
            _dir: dir,
            log,
            directory: format!("https://127.0.0.1:{acme_port}/dir"),
            listener_ca_path,
            issuing_root: String::new(),
        };
        let ready = tokio::task::spawn_blocking(move || ready_rx.recv_timeout(Duration::from_secs(30)))
            .await
            .unwrap();
        assert!(ready.is_ok(), "pebble did not start:\n{}", pebble.log());

        let management = client_trusting(&ca.pem()).build().unwrap();
        // The management listener comes up just after the ACME one announces itself: retry briefly.
        let roots = format!("https://127.0.0.1:{management_port}/roots/0");
        let mut attempt = 0;
        let root = loop {
            match management.get(&roots).send().await {
                Ok(root) => break root,
                Err(_) if attempt < 100 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("pebble's management port: {error}\n{}", pebble.log()),
            }
        };
        assert!(root.status().is_success(), "pebble root: {}", root.status());
        pebble.issuing_root = root.text().await.unwrap();
        pebble
    }

    /// How many certificates pebble has issued so far.
    pub fn issued(&self) -> usize {
        self.log
            .lock()
            .unwrap()
            .matches("Issued certificate serial")
            .count()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
