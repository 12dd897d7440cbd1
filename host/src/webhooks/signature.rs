//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): the secret is `whsec_`
//! followed by base64 of its key bytes; each request carries `webhook-id`, `webhook-timestamp`
//! (seconds) and `webhook-signature`, `v1,` and base64 of HMAC-SHA256 over
//! `<id>.<timestamp>.<body>`. Any verifier of the convention checks them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";
/// Key bytes a secret must have: the convention asks for 24 to 64.
const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// A webhook's signing key, parsed from its `whsec_…` form.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    /// Parses `whsec_<base64 of 24 to 64 bytes>`; the error never repeats the secret.
    pub fn parse(secret: &str) -> Result<Self, String> {
        let encoded = secret
            .strip_prefix(PREFIX)
            .ok_or("secret must start with whsec_ (Standard Webhooks)")?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| "secret: the part after whsec_ must be base64")?;
        if !KEY_BYTES.contains(&key.len()) {
            return Err(format!(
                "secret: the key must be {} to {} bytes (base64 after whsec_)",
                KEY_BYTES.start(),
                KEY_BYTES.end()
            ));
        }
        Ok(Self(key))
    }

    /// The `webhook-signature` header of `body` sent as message `id` at `timestamp` (seconds).
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_convention_example() {
        // The example of the Standard Webhooks specification.
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn refuses_secrets_of_another_shape() {
        assert!(SigningKey::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(SigningKey::parse("whsec_not base64!").is_err());
        assert!(SigningKey::parse("whsec_c2hvcnQ=").is_err());
        let error = SigningKey::parse("whsec_c2hvcnQ=").unwrap_err();
        assert!(!error.contains("c2hvcnQ"));
    }
}
