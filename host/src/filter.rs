//! Which events a connection asked for: `?events=room.42.*,profile`, a comma-separated list of exact
//! event names and prefixes ending in `*`. One parser for every place that takes a filter (`/sse`,
//! `/admin/sse`, and the history pages and webhooks to come).

use std::collections::HashSet;

/// Items a filter may hold.
pub const MAX_ITEMS: usize = 64;
/// Longest item, in bytes.
pub const MAX_ITEM_BYTES: usize = 256;

/// A parsed filter. The default lets every event through (a stream without `events`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// `None`: everything. Otherwise the exact names and the prefixes asked for (boxed: every open
    /// stream holds a filter, most of them none).
    only: Option<Box<Only>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Only {
    exact: HashSet<String>,
    prefixes: Vec<String>,
}

impl EventFilter {
    /// Parses `room.42.*,profile`. The error says what is wrong, for a 400.
    pub fn parse(text: &str) -> Result<Self, String> {
        let items: Vec<&str> = text.split(',').collect();
        if items.len() > MAX_ITEMS {
            return Err(format!("events: at most {MAX_ITEMS} items, got {}", items.len()));
        }
        let mut only = Only {
            exact: HashSet::new(),
            prefixes: Vec::new(),
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
                Some(star) if star == item.len() - 1 => only.prefixes.push(item[..star].to_owned()),
                Some(_) => return Err(format!("events: `*` may only end an item: {item:?}")),
            }
        }
        // A bare `*` is every name.
        if only.prefixes.iter().any(String::is_empty) {
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
