//! Time-based one-time passwords (RFC 6238 via totp-rs): login two-factor codes (SHA-1, 6 digits,
//! 30 s steps, ±1 step of skew — what authenticator apps expect), their otpauth QR code, and
//! password-reset codes, which use a separate secret and a step of `--totp_duration` seconds.

use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Builder, Secret, Totp};

const LOGIN_STEP_SECS: u64 = 30;
const DIGITS: u8 = 6;

/// A fresh random secret (160 bits), base32.
pub fn new_secret() -> String {
    Secret::generate().to_base32()
}

fn totp(secret: &str, step: u64, skew: u16, issuer: Option<&str>, account: &str) -> Result<Totp, String> {
    let secret = Secret::try_from_base32(secret).map_err(|e| e.to_string())?;
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_skew(skew)
        .with_step_duration(step)
        .with_secret(secret)
        .with_issuer(issuer)
        .with_account_name(account)
        .build()
        .map_err(|e| e.to_string())
}

/// The step a login code belongs to, if `code` is valid at `now` (seconds since the epoch).
pub fn check_login(secret: &str, code: &str, now: u64) -> Option<u64> {
    totp(secret, LOGIN_STEP_SECS, 1, None, "user")
        .ok()?
        .check(code, now)
}

/// The otpauth QR code (PNG, base64 with padding) that an authenticator app scans.
pub fn qr_base64(secret: &str, issuer: &str, username: &str) -> Result<String, String> {
    let totp = totp(secret, LOGIN_STEP_SECS, 1, Some(issuer), username)?;
    totp.to_qr_base64().map_err(|e| e.to_string())
}

/// The reset code for a reset issued at `issued_at` with `duration`-second steps.
pub fn reset_code(secret: &str, duration: u64, issued_at: u64) -> Result<String, String> {
    Ok(totp(secret, duration.max(1), 0, None, "reset")?
        .generate(issued_at)
        .to_string())
}

/// Whether `code` matches the reset issued at `issued_at`, compared in constant time.
pub fn reset_code_matches(secret: &str, duration: u64, issued_at: u64, code: &str) -> bool {
    reset_code(secret, duration, issued_at)
        .is_ok_and(|expected| bool::from(expected.as_bytes().ct_eq(code.trim().as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_codes_follow_rfc_6238_with_one_step_of_skew() {
        // RFC 6238 appendix B, SHA-1 secret "12345678901234567890", truncated to 6 digits.
        let secret = Secret::from(b"12345678901234567890".to_vec()).to_base32();
        assert_eq!(check_login(&secret, "287082", 59), Some(1));
        assert_eq!(
            check_login(&secret, "287082", 59 + 30),
            Some(1),
            "one step late is accepted"
        );
        assert_eq!(
            check_login(&secret, "287082", 59 + 60),
            None,
            "two steps late is not"
        );
        assert_eq!(check_login(&secret, "000000", 59), None);
    }

    #[test]
    fn reset_codes_use_their_own_step() {
        let secret = new_secret();
        let code = reset_code(&secret, 300, 1_000).unwrap();
        assert!(reset_code_matches(&secret, 300, 1_000, &code));
        assert!(!reset_code_matches(&new_secret(), 300, 1_000, &code));
    }
}
