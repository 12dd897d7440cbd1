//! What a scenario costs: the server's resident memory (anonymous vs file-backed) before, during and
//! after the run, and the CPU that the server, this load generator and the whole machine used over
//! the measured phase. Server figures need `--pid`; without it they are null.

use std::time::Instant;

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::procfs::{self, Memory, Process};

/// Both processes' CPU clocks at one moment.
pub struct CpuMark {
    at: Instant,
    pid: Option<u32>,
    server: Option<f64>,
    client: Option<f64>,
    machine: Option<f64>,
}

/// CPU seconds used between two marks, and the wall-clock seconds between them.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuUse {
    pub wall_seconds: f64,
    pub server_seconds: Option<f64>,
    pub client_seconds: Option<f64>,
    /// The whole machine's busy time: well above server + client means other load interfered.
    pub machine_seconds: Option<f64>,
}

impl CpuMark {
    pub fn now(pid: Option<u32>) -> Self {
        Self {
            at: Instant::now(),
            pid,
            server: pid.and_then(|pid| procfs::cpu_seconds(Process::Id(pid))),
            client: procfs::cpu_seconds(Process::Current),
            machine: procfs::machine_busy_seconds(),
        }
    }

    pub fn until_now(&self) -> CpuUse {
        let later = Self::now(self.pid);
        // Rounded to the microsecond: the clocks count whole ticks, and this hides float noise.
        let spent =
            |start: Option<f64>, end: Option<f64>| Some(((end? - start?) * 1e6).round().max(0.0) / 1e6);
        CpuUse {
            wall_seconds: (later.at - self.at).as_secs_f64(),
            server_seconds: spent(self.server, later.server),
            client_seconds: spent(self.client, later.client),
            machine_seconds: spent(self.machine, later.machine),
        }
    }
}

impl CpuUse {
    /// Cores kept busy on average: CPU seconds per wall-clock second.
    fn cores(&self, seconds: Option<f64>) -> Option<f64> {
        Some(seconds? / self.wall_seconds.max(1e-3))
    }

    pub fn server_cores(&self) -> Option<f64> {
        self.cores(self.server_seconds)
    }

    pub fn client_cores(&self) -> Option<f64> {
        self.cores(self.client_seconds)
    }

    pub fn machine_cores(&self) -> Option<f64> {
        self.cores(self.machine_seconds)
    }

    /// CPU microseconds per operation (null with no operations).
    pub fn micros_per(seconds: Option<f64>, operations: u64) -> Option<f64> {
        (operations > 0).then_some(seconds? * 1e6 / operations as f64)
    }
}

/// Started at the beginning of the measured phase; see the module doc.
pub struct Probe {
    pid: Option<u32>,
    before: Option<Memory>,
    during: Option<JoinHandle<Option<Memory>>>,
    start: CpuMark,
    cpu: Option<CpuUse>,
}

/// Everything a probe saw, ready to be reported.
pub struct Samples {
    pub before: Option<Memory>,
    pub during: Option<Memory>,
    pub after: Option<Memory>,
    pub cpu: CpuUse,
}

impl Probe {
    /// Samples the server's memory ("before") and both CPU clocks: call as the measured phase starts.
    pub fn start(pid: Option<u32>) -> Self {
        Self {
            pid,
            before: pid.and_then(procfs::memory),
            during: None,
            start: CpuMark::now(pid),
            cpu: None,
        }
    }

    /// Samples the server's memory at `at` (normally half-way through the measured phase) in the
    /// background, so the scenario's own timing is not disturbed.
    pub fn sample_during_at(&mut self, at: tokio::time::Instant) {
        let pid = self.pid;
        self.during = Some(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            pid.and_then(procfs::memory)
        }));
    }

    /// Ends the measured phase: the CPU used since `start`.
    pub fn end_phase(&mut self) -> CpuUse {
        *self.cpu.get_or_insert_with(|| self.start.until_now())
    }

    /// Samples the server's memory once more ("after") and hands over every figure.
    pub async fn finish(mut self) -> Samples {
        let cpu = self.end_phase();
        let during = match self.during.take() {
            Some(task) => task.await.ok().flatten(),
            None => None,
        };
        Samples {
            before: self.before,
            during,
            after: self.pid.and_then(procfs::memory),
            cpu,
        }
    }
}

impl Samples {
    /// Adds `server_rss_{anon,file}_kib_{before,during,after}`, `server_cpu_seconds`,
    /// `server_cores`, `client_cpu_seconds`, `client_cores` and `machine_cores` to a scenario's JSON.
    pub fn add_to(&self, result: &mut Value) {
        let Some(object) = result.as_object_mut() else {
            return;
        };
        for (when, memory) in [
            ("before", self.before),
            ("during", self.during),
            ("after", self.after),
        ] {
            object.insert(
                format!("server_rss_anon_kib_{when}"),
                json!(memory.map(|m| m.anon_kib)),
            );
            object.insert(
                format!("server_rss_file_kib_{when}"),
                json!(memory.map(|m| m.file_kib)),
            );
        }
        let cpu = &self.cpu;
        object.insert("server_cpu_seconds".into(), json!(cpu.server_seconds));
        object.insert("server_cores".into(), json!(cpu.server_cores()));
        object.insert("client_cpu_seconds".into(), json!(cpu.client_seconds));
        object.insert("client_cores".into(), json!(cpu.client_cores()));
        object.insert("machine_cores".into(), json!(cpu.machine_cores()));
    }
}
