//! Scopes per event name (`--enforce_scopes`): inserting event `E` needs `E:post` or `*:post`,
//! receiving it on `/sse` needs `E:get` or `*:get`.
//!
//! A scope has exactly one colon (see `validate::scopes`), so its resource never holds one: an
//! event whose name contains `:` is reachable only through the `*` scopes.

use crate::filter::EventFilter;

/// What a scope lets its holder do with an event name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Post,
    Get,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Post => "post",
            Self::Get => "get",
        }
    }
}

/// Whether `scopes` allow `operation` on events named `event`.
pub fn allows(scopes: &[String], event: &str, operation: Operation) -> bool {
    scopes.iter().any(|scope| match scope.split_once(':') {
        Some((resource, op)) => op == operation.as_str() && (resource == "*" || resource == event),
        None => false,
    })
}

/// The event names `scopes` allow `operation` on: `None` when they allow every name (`*:op`).
pub fn names_allowed(scopes: &[String], operation: Operation) -> Option<Vec<&str>> {
    let mut names = Vec::new();
    for scope in scopes {
        match scope.split_once(':') {
            Some(("*", op)) if op == operation.as_str() => return None,
            Some((name, op)) if op == operation.as_str() => names.push(name),
            _ => {}
        }
    }
    Some(names)
}

/// The part of `filter` whose events `scopes` let their holder receive.
pub fn receivable(filter: &EventFilter, scopes: &[String]) -> EventFilter {
    match names_allowed(scopes, Operation::Get) {
        Some(names) => filter.narrowed_to(names),
        None => filter.clone(),
    }
}

/// Whether `scopes` allow `operation` on any event name at all.
pub fn allows_any(scopes: &[String], operation: Operation) -> bool {
    scopes.iter().any(|scope| {
        scope
            .split_once(':')
            .is_some_and(|(_, op)| op == operation.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_name_scope_allows_only_its_name_and_operation() {
        let held = scopes(&["news:post", "chat:get"]);
        assert!(allows(&held, "news", Operation::Post));
        assert!(!allows(&held, "news", Operation::Get));
        assert!(allows(&held, "chat", Operation::Get));
        assert!(!allows(&held, "chat", Operation::Post));
        assert!(!allows(&held, "newsletter", Operation::Post), "no prefix match");
    }

    #[test]
    fn the_star_scope_allows_every_name_including_those_with_colons() {
        let held = scopes(&["*:get"]);
        assert!(allows(&held, "anything", Operation::Get));
        assert!(allows(&held, "a:b", Operation::Get));
        assert!(!allows(&held, "anything", Operation::Post));
        assert!(
            !allows(&scopes(&["a:get"]), "a:b", Operation::Get),
            "`a:get` is not `a:b`'s"
        );
    }

    #[test]
    fn names_allowed_lists_what_allows_says() {
        let held = scopes(&["news:post", "chat:get", "dm:get"]);
        assert_eq!(names_allowed(&held, Operation::Get), Some(vec!["chat", "dm"]));
        assert_eq!(names_allowed(&held, Operation::Post), Some(vec!["news"]));
        assert_eq!(names_allowed(&scopes(&["x:get", "*:get"]), Operation::Get), None);
        assert_eq!(names_allowed(&[], Operation::Get), Some(vec![]));
    }

    #[test]
    fn allows_any_looks_at_the_operation_only() {
        assert!(allows_any(&scopes(&["x:get"]), Operation::Get));
        assert!(!allows_any(&scopes(&["x:post"]), Operation::Get));
        assert!(!allows_any(&[], Operation::Post));
    }
}
