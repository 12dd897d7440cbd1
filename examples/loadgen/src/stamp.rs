//! The stamp a `fanout` publisher puts in each event's data: `{"p": publisher, "n": its sequence
//! number, "sent_us": send time}`, and `"r": room` in the `rooms` scenario. Subscribers read it with a small scanner rather than building a
//! `serde_json::Value` per frame, so that at 100,000s of frames a second they measure the server,
//! not their own allocations.

use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u64,
    pub n: u64,
    /// Microseconds since the Unix epoch when the publisher sent the insert.
    pub sent_us: u64,
    /// The room the event was published to (`rooms` only).
    pub room: Option<u64>,
}

impl Stamp {
    pub fn to_json(self) -> Value {
        let mut stamp = json!({"p": self.publisher, "n": self.n, "sent_us": self.sent_us});
        if let Some(room) = self.room {
            stamp["r"] = room.into();
        }
        stamp
    }

    /// Reads a stamp from an event's JSON data, in any key order and spacing; None for data that
    /// is not a stamp (another run's or another client's event).
    pub fn parse(data: &[u8]) -> Option<Self> {
        Some(Self {
            publisher: field(data, b"\"p\"")?,
            n: field(data, b"\"n\"")?,
            sent_us: field(data, b"\"sent_us\"")?,
            room: field(data, b"\"r\""),
        })
    }
}

/// The unsigned integer after the object key `quoted_key` (a key follows `{` or `,`, so a string
/// value equal to the key is not taken for it).
fn field(data: &[u8], quoted_key: &[u8]) -> Option<u64> {
    let mut from = 0;
    loop {
        let at = from + find(&data[from..], quoted_key)?;
        from = at + quoted_key.len();
        let before = data[..at].iter().rev().find(|b| !b.is_ascii_whitespace());
        if !matches!(before, Some(b'{' | b',')) {
            continue;
        }
        let rest = skip_space(&data[from..]).strip_prefix(b":")?;
        return unsigned(skip_space(rest));
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn skip_space(bytes: &[u8]) -> &[u8] {
    let spaces = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &bytes[spaces..]
}

/// Leading decimal digits as a u64; None without digits, on overflow, or for a fraction/exponent.
fn unsigned(bytes: &[u8]) -> Option<u64> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || matches!(bytes.get(digits), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    bytes[..digits].iter().try_fold(0u64, |value, &digit| {
        value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_serde_writes_and_other_spellings() {
        let stamp = Stamp {
            publisher: 3,
            n: 12_345,
            sent_us: 1_764_000_000_123_456,
            room: None,
        };
        assert_eq!(Stamp::parse(stamp.to_json().to_string().as_bytes()), Some(stamp));
        let in_room = Stamp {
            room: Some(7),
            ..stamp
        };
        assert_eq!(
            Stamp::parse(in_room.to_json().to_string().as_bytes()),
            Some(in_room)
        );
        let spaced = br#"{ "sent_us" : 1764000000123456, "n": 12345 ,"p":3 }"#;
        assert_eq!(Stamp::parse(spaced), Some(stamp));
    }

    #[test]
    fn refuses_what_is_not_a_stamp() {
        for data in [
            &br#"{"p":1,"n":2}"#[..],
            br#"{"p":1,"n":-2,"sent_us":3}"#,
            br#"{"p":1,"n":2.5,"sent_us":3}"#,
            br#"{"p":1,"n":"2","sent_us":3}"#,
            br#"{"p":1,"n":99999999999999999999,"sent_us":3}"#,
            b"null",
            b"",
        ] {
            assert_eq!(Stamp::parse(data), None, "{}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn a_string_value_is_not_a_key() {
        let data = br#"{"x":"n","p":1,"n":2,"sent_us":3}"#;
        assert_eq!(Stamp::parse(data).map(|s| s.n), Some(2));
    }
}
