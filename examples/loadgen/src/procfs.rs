//! Reads a process's resident memory and CPU time from Linux's /proc. Every reader returns None
//! where /proc is missing or unreadable, so such a run reports null figures instead of failing.

use std::sync::OnceLock;

/// Resident memory in KiB as /proc/<pid>/status splits it: anonymous pages (heap and stacks, what
/// a leak grows) and file-backed pages (the binary and LMDB's mapped database, which are not a leak).
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    pub rss_kib: u64,
    pub anon_kib: u64,
    pub file_kib: u64,
}

pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |name: &str| -> Option<u64> {
        let line = status.lines().find_map(|line| line.strip_prefix(name))?;
        line.split_whitespace().next()?.parse().ok()
    };
    Some(Memory {
        rss_kib: kib("VmRSS:")?,
        anon_kib: kib("RssAnon:")?,
        file_kib: kib("RssFile:")?,
    })
}

/// Which process to read: the server by its pid, or this load generator.
#[derive(Clone, Copy)]
pub enum Process {
    Id(u32),
    Current,
}

/// CPU time (user + system, all threads) the process has used since it started, in seconds.
pub fn cpu_seconds(process: Process) -> Option<f64> {
    let path = match process {
        Process::Id(pid) => format!("/proc/{pid}/stat"),
        Process::Current => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Field 2, the command name, is in parentheses and may hold spaces: count from after its ')',
    // where field 3 begins. utime and stime are fields 14 and 15, in clock ticks.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let utime: u64 = fields.nth(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks_per_second())
}

/// CPU time the whole machine has spent busy (user, nice, system, irq, softirq; not idle, iowait or
/// steal) since boot, in seconds summed over cores: other load on a shared machine shows here.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find_map(|line| line.strip_prefix("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .map_while(|field| field.parse().ok())
        .collect();
    let [user, nice, system, _idle, _iowait, irq, softirq, ..] = ticks[..] else {
        return None;
    };
    Some((user + nice + system + irq + softirq) as f64 / clock_ticks_per_second())
}

/// `getconf CLK_TCK`, asked once (100 on every usual Linux, which is also the fallback).
pub fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok()?.trim().parse().ok())
            .filter(|ticks: &f64| *ticks > 0.0)
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let memory = memory(std::process::id()).expect("/proc/<pid>/status");
        assert!(
            memory.anon_kib > 0 && memory.rss_kib >= memory.anon_kib,
            "{memory:?}"
        );
        let cpu = cpu_seconds(Process::Current).expect("/proc/self/stat");
        assert!(cpu >= 0.0);
        assert!(cpu_seconds(Process::Id(std::process::id())).is_some());
        assert!(machine_busy_seconds().expect("/proc/stat") > 0.0);
    }
}
