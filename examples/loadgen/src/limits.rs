//! Open-file limits. Each connection is one descriptor here and one in the server, so 10,000
//! connections need far more than the usual soft limit of 1,024: raise ours to the hard limit, and
//! say plainly when ours or the server's is still too low for the scenario.

/// Descriptors needed besides the scenario's sockets: stdio, epoll, the runtime, setup requests.
const SPARE: u64 = 64;

/// Raises this process's soft RLIMIT_NOFILE to its hard limit; returns the limit now in force.
pub fn raise_open_files() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            eprintln!("open-file limit of broker-load: {limit}");
            Some(limit)
        }
        Err(error) => {
            eprintln!("could not raise the open-file limit: {error}");
            rlimit::Resource::NOFILE.get_soft().ok()
        }
    }
}

/// The server's soft open-file limit (None: unknown; `u64::MAX`: unlimited).
pub fn server_open_files(pid: u32) -> Option<u64> {
    let limits = rlimit::ProcLimits::read_process(i32::try_from(pid).ok()?).ok()?;
    Some(limits.max_open_files?.soft_limit.unwrap_or(u64::MAX))
}

/// Warns on stderr when `sockets` connections will not fit under our limit or the server's.
pub fn warn_if_too_low(sockets: u64, ours: Option<u64>, server: Option<u64>, pid: Option<u32>) {
    let needed = sockets + SPARE;
    if let Some(limit) = ours.filter(|&limit| limit < needed) {
        eprintln!(
            "WARNING: this scenario needs about {needed} open files but broker-load may open only \
             {limit} (its hard limit): connections past that will fail. Raise the hard limit \
             (e.g. `ulimit -Hn`, as root) or lower --clients/--subscribers."
        );
    }
    if let (Some(limit), Some(pid)) = (server.filter(|&limit| limit < needed), pid) {
        eprintln!(
            "WARNING: the server (pid {pid}) may open only {limit} files, fewer than the {needed} \
             this scenario needs: it will refuse connections past that. Start it under a higher \
             `ulimit -n`."
        );
    }
}
