//! Argon2id password hashes (PHC strings), computed in memory the caller owns and reuses.
//!
//! Why own the memory: argon2 needs ~19 MiB of blocks per call. Allocated and freed per call, glibc
//! keeps much of it in per-thread arenas (measured: 425 MiB resident with two threads after a burst
//! of Basic requests). A `Hasher` allocates its blocks once and keeps them, so each password thread
//! holds exactly one block buffer for its whole life. Both calls are slow on purpose: run them on
//! the password workers, never on the async runtime.

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;

/// The parameters of new hashes: argon2's defaults (argon2id, 19 MiB, 2 passes, 1 lane).
const PARAMS: Params = Params::DEFAULT;
/// Most blocks a stored hash may ask for (4× the default): hashes are Broker's own, but a bound
/// keeps a damaged record from asking for gigabytes.
const MAX_BLOCKS: usize = 4 * Params::DEFAULT_M_COST as usize;

/// One thread's argon2: its block buffer, kept across calls.
#[derive(Default)]
pub struct Hasher {
    blocks: Vec<Block>,
    /// A hash of a random password, verified against when the user does not exist.
    dummy: Option<String>,
}

impl Hasher {
    /// A new PHC string for `password`, with a random 16-byte salt.
    pub fn hash(&mut self, password: &str) -> Result<String, String> {
        let salt = Salt::new(uuid::Uuid::new_v4().as_bytes()).map_err(|e| e.to_string())?;
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, PARAMS);
        argon
            .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, self.blocks_for(&PARAMS)?)
            .map_err(|e| e.to_string())?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&PARAMS).map_err(|e| e.to_string())?,
            salt: Some(salt),
            hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
        };
        Ok(phc.to_string())
    }

    /// Whether `password` matches the PHC string `phc`, compared in constant time.
    pub fn verify(&mut self, password: &str, phc: &str) -> Result<bool, String> {
        let parsed = PasswordHash::new(phc).map_err(|e| e.to_string())?;
        let algorithm = Algorithm::try_from(parsed.algorithm.as_str()).map_err(|e| e.to_string())?;
        let version = match parsed.version {
            Some(version) => Version::try_from(version).map_err(|e| e.to_string())?,
            None => Version::default(),
        };
        let params = Params::try_from(&parsed).map_err(|e| e.to_string())?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Err("the stored hash has no salt or output".into());
        };
        let mut out = vec![0u8; expected.len()];
        let argon = Argon2::new(algorithm, version, params.clone());
        argon
            .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, self.blocks_for(&params)?)
            .map_err(|e| e.to_string())?;
        Ok(out.ct_eq(expected.as_bytes()).into())
    }

    /// Spends what a real verification costs, for unknown usernames.
    pub fn burn_time(&mut self, password: &str) {
        if self.dummy.is_none() {
            self.dummy = self.hash(&uuid::Uuid::new_v4().to_string()).ok();
        }
        if let Some(dummy) = self.dummy.clone() {
            let _ = self.verify(password, &dummy);
        }
    }

    /// The first `params.block_count()` blocks of this thread's buffer, grown (once) if needed.
    fn blocks_for(&mut self, params: &Params) -> Result<&mut [Block], String> {
        let needed = params.block_count();
        if needed > MAX_BLOCKS {
            return Err(format!("the stored hash asks for {needed} KiB of memory"));
        }
        if self.blocks.len() < needed {
            self.blocks.resize(needed, Block::default());
        }
        Ok(&mut self.blocks[..needed])
    }
}

#[cfg(test)]
mod tests {
    use argon2::PasswordVerifier;

    use super::*;

    #[test]
    fn hashes_verify_here_and_with_the_argon2_crate_and_back() {
        let mut hasher = Hasher::default();
        let phc = hasher.hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(hasher.verify("correct horse", &phc).unwrap());
        assert!(!hasher.verify("wrong horse", &phc).unwrap());
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );

        // Hashes written before this module (by argon2's own hasher) still verify.
        use argon2::PasswordHasher;
        let older = Argon2::default().hash_password(b"older").unwrap().to_string();
        assert!(hasher.verify("older", &older).unwrap());
        assert!(!hasher.verify("newer", &older).unwrap());
    }
}
