//! The admin token check, in constant time.

use subtle::ConstantTimeEq;

pub fn token_matches(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}
