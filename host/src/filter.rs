//! Which events a connection asked for: `?events=room.42.*,profile`, a comma-separated list of exact
//! event names and prefixes ending in `*`. One parser for every place that takes a filter (`/sse`,
//! `/admin/sse`, and the history pages and webhooks to come).

use std::collections::BTreeSet;

/// Items a filter may hold.
pub const MAX_ITEMS: usize = 64;
/// Longest item, in bytes.
pub const MAX_ITEM_BYTES: usize = 256;

/// A parsed filter. The default lets every event through (a stream without `events`). Kept in a
/// canonical form (sorted, without repeats), so that equal filters compare and hash equal: the live
/// fan-out gives streams with the same filter one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EventFilter {
    /// `None`: everything. Otherwise the exact names and the prefixes asked for (boxed: every open
    /// stream holds a filter, most of them none).
    only: Option<Box<Only>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Only {
    exact: BTreeSet<String>,
    prefixes: BTreeSet<String>,
}

impl EventFilter {
    /// Parses `room.42.*,profile`. The error says what is wrong, for a 400.
    pub fn parse(text: &str) -> Result<Self, String> {
        let items: Vec<&str> = text.split(',').collect();
        if items.len() > MAX_ITEMS {
            return Err(format!("events: at most {MAX_ITEMS} items, got {}", items.len()));
        }
        let mut only = Only {
            exact: BTreeSet::new(),
            prefixes: BTreeSet::new(),
        };
        for item in items {
            if item.is_empty() {
                return Err("events: an item is empty (two commas, or a comma at an end)".into());
            }
            if item.len() > MAX_ITEM_BYTES {
                return Err(format!("events: an item is longer than {MAX_ITEM_BYTES} bytes"));
            }
            match item.find('*') {
                None => {
                    only.exact.insert(item.to_owned());
                }
                Some(star) if star == item.len() - 1 => {
                    only.prefixes.insert(item[..star].to_owned());
                }
                Some(_) => return Err(format!("events: `*` may only end an item: {item:?}")),
            }
        }
        // A bare `*` is every name.
        if only.prefixes.contains("") {
            return Ok(Self::default());
        }
        Ok(Self {
            only: Some(Box::new(only)),
        })
    }

    /// The filter of an optional `events` parameter: everything when absent.
    pub fn from_param(param: Option<&str>) -> Result<Self, String> {
        param.map_or_else(|| Ok(Self::default()), Self::parse)
    }

    /// Whether every event passes.
    pub fn is_everything(&self) -> bool {
        self.only.is_none()
    }

    /// The names among `names` that this filter lets through, as a filter of exact names: a
    /// stream's filter narrowed to the names its `get` scopes cover. Possibly a filter that lets
    /// nothing through.
    pub fn narrowed_to<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Self {
        let exact = names
            .into_iter()
            .filter(|name| self.matches(name))
            .map(str::to_owned)
            .collect();
        Self {
            only: Some(Box::new(Only {
                exact,
                prefixes: BTreeSet::new(),
            })),
        }
    }

    /// The exact names and the prefixes the filter is made of (both empty for everything, and for
    /// a filter that lets nothing through: tell them apart with `is_everything`).
    pub fn items(&self) -> (impl Iterator<Item = &str>, impl Iterator<Item = &str>) {
        let only = self.only.as_deref();
        (
            only.into_iter()
                .flat_map(|only| only.exact.iter().map(String::as_str)),
            only.into_iter()
                .flat_map(|only| only.prefixes.iter().map(String::as_str)),
        )
    }

    /// Whether an event named `name` passes.
    pub fn matches(&self, name: &str) -> bool {
        self.only.as_ref().is_none_or(|only| {
            only.exact.contains(name)
                || only
                    .prefixes
                    .iter()
                    .any(|prefix| name.starts_with(prefix.as_str()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefixes_match_what_they_say() {
        let filter = EventFilter::parse("room.42.*,profile").unwrap();
        assert!(filter.matches("room.42.msg"));
        assert!(filter.matches("room.42."));
        assert!(filter.matches("profile"));
        assert!(!filter.matches("room.43.msg"));
        assert!(!filter.matches("room.42"), "the prefix includes its dot");
        assert!(!filter.matches("profiles"), "an exact name is exact");
        assert!(EventFilter::default().matches("anything"));
        assert!(EventFilter::parse("*").unwrap().is_everything());
        assert!(EventFilter::from_param(None).unwrap().is_everything());
    }

    #[test]
    fn equal_filters_are_equal_however_written() {
        let parse = |text| EventFilter::parse(text).unwrap();
        assert_eq!(parse("b,a*,a*,b"), parse("a*,b"));
        assert_ne!(parse("a*"), parse("a"));
    }

    #[test]
    fn narrowing_to_names_keeps_the_names_both_allow() {
        let filter = EventFilter::parse("room.*,profile").unwrap();
        let narrowed = filter.narrowed_to(["room.1", "profile", "other"]);
        assert!(narrowed.matches("room.1") && narrowed.matches("profile"));
        assert!(!narrowed.matches("other") && !narrowed.matches("room.2"));
        let nothing = filter.narrowed_to([]);
        assert!(!nothing.is_everything() && !nothing.matches("room.1"));
        let (exact, prefixes) = nothing.items();
        assert_eq!(exact.count() + prefixes.count(), 0);
        assert!(EventFilter::default().narrowed_to(["a"]).matches("a"));
    }

    #[test]
    fn bad_filters_say_what_is_wrong() {
        let error = |text: &str| EventFilter::parse(text).unwrap_err();
        assert!(error("a,,b").contains("empty"));
        assert!(error("").contains("empty"));
        assert!(error("a,").contains("empty"));
        assert!(error("ro*om").contains("`*` may only end an item"));
        assert!(error("**").contains("`*` may only end an item"));
        assert!(error(&vec!["a"; 65].join(",")).contains("at most 64 items"));
        assert!(EventFilter::parse(&vec!["a"; 64].join(",")).is_ok());
        assert!(error(&"x".repeat(257)).contains("longer than 256 bytes"));
        assert!(EventFilter::parse(&"x".repeat(256)).is_ok());
    }
}
