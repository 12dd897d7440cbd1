//! This node's copy of the user directory, kept up to date by the bucket watch, so that
//! authenticating a request costs no round trip to NATS.
//!
//! Each user is kept with the bucket revision it came from, and a user's revision never goes back:
//! the node's own writes are applied at once (it sees them before its caller is answered), and the
//! watch delivering them later changes nothing. The copy answers only while it is current (the watch
//! has reached where the bucket stood when it opened, and has not failed since); otherwise, and for
//! a name it does not hold, the caller reads the stream leader. Another node's change reaches the
//! copy when the watch delivers it (milliseconds).

use std::collections::HashMap;
use std::sync::RwLock;

use crate::model::User;

/// What the copy knows of one username.
pub enum Known {
    /// The user, as of the newest revision seen.
    User(Box<User>),
    /// Deleted from the bucket (by an operator).
    Gone,
    /// Not held, or the copy is not current: ask the leader.
    Unsure,
}

#[derive(Default)]
pub struct UserCopy {
    inner: RwLock<Copy>,
}

#[derive(Default)]
struct Copy {
    /// username → (bucket revision, the record; `None` once deleted).
    users: HashMap<String, (u64, Option<User>)>,
    current: bool,
}

impl UserCopy {
    /// Takes `user` (or its deletion) at bucket `revision`, unless a newer revision is held.
    pub fn apply(&self, username: &str, revision: u64, user: Option<User>) {
        let mut copy = self.inner.write().expect("user copy lock");
        match copy.users.get_mut(username) {
            Some((held, _)) if *held >= revision => {}
            Some(entry) => *entry = (revision, user),
            None => {
                copy.users.insert(username.to_owned(), (revision, user));
            }
        }
    }

    /// Whether the copy may answer on its own.
    pub fn set_current(&self, current: bool) {
        self.inner.write().expect("user copy lock").current = current;
    }

    pub fn get(&self, username: &str) -> Known {
        let copy = self.inner.read().expect("user copy lock");
        match copy.users.get(username) {
            _ if !copy.current => Known::Unsure,
            Some((_, Some(user))) => Known::User(Box::new(user.clone())),
            Some((_, None)) => Known::Gone,
            None => Known::Unsure,
        }
    }

    /// Every user, by username; `None` while the copy is not current.
    pub fn list(&self) -> Option<Vec<User>> {
        let copy = self.inner.read().expect("user copy lock");
        if !copy.current {
            return None;
        }
        let mut users: Vec<User> = copy.users.values().filter_map(|(_, user)| user.clone()).collect();
        users.sort_by(|a, b| a.username.cmp(&b.username));
        Some(users)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, revision: u64) -> User {
        User {
            id: uuid::Uuid::nil(),
            username: name.to_owned(),
            password_hash: String::new(),
            revoked: false,
            tenant_name: "t".into(),
            email: None,
            scopes: None,
            data: None,
            two_factor: false,
            totp_secret: None,
            last_totp_step: None,
            reset: None,
            revision,
            credential_generation: 0,
        }
    }

    fn revision_of(copy: &UserCopy, name: &str) -> Option<u64> {
        match copy.get(name) {
            Known::User(user) => Some(user.revision),
            _ => None,
        }
    }

    #[test]
    fn answers_only_while_current_and_never_goes_back() {
        let copy = UserCopy::default();
        copy.apply("ann", 5, Some(user("ann", 2)));
        assert!(matches!(copy.get("ann"), Known::Unsure), "not current yet");
        copy.set_current(true);
        assert_eq!(revision_of(&copy, "ann"), Some(2));
        // The watch delivering an older revision after the node's own write changes nothing.
        copy.apply("ann", 9, Some(user("ann", 3)));
        copy.apply("ann", 5, Some(user("ann", 2)));
        assert_eq!(revision_of(&copy, "ann"), Some(3));
        copy.apply("ann", 10, None);
        assert!(matches!(copy.get("ann"), Known::Gone));
        assert!(
            matches!(copy.get("bob"), Known::Unsure),
            "a name not held is asked for"
        );
        assert_eq!(copy.list().map(|users| users.len()), Some(0));
        copy.set_current(false);
        assert!(copy.list().is_none());
    }
}
