//! Biscuit tokens for other services: the authority block holds `right("<resource>", "<operation>")`
//! for each of the user's scopes, signed by a root key pair that is stored in the database so that
//! services can pin its public key.

use std::time::{Duration, SystemTime};

use biscuit_auth::builder::{fact, string};
use biscuit_auth::builder_ext::BuilderExt;
use biscuit_auth::{Algorithm, Biscuit, KeyPair, PrivateKey};

use crate::storage::StorageError;
use crate::user_directory::UserDirectory;

const ROOT_KEY: &str = "biscuit_root_private_key";

pub struct BiscuitIssuer {
    root: KeyPair,
}

impl BiscuitIssuer {
    /// Loads the root key pair from the user directory, generating and storing it on first start
    /// (in a cluster, the first node to start stores it and every node uses that one).
    pub async fn load(users: &dyn UserDirectory) -> Result<Self, StorageError> {
        let fresh = KeyPair::new().private().to_bytes().to_vec();
        let bytes = users.shared_value(ROOT_KEY, fresh).await?;
        let private = PrivateKey::from_bytes(&bytes, Algorithm::Ed25519).map_err(StorageError::backend)?;
        Ok(Self {
            root: KeyPair::from(&private),
        })
    }

    /// The root public key (32 bytes for Ed25519).
    pub fn public_key(&self) -> Vec<u8> {
        self.root.public().to_bytes()
    }

    /// A serialized biscuit for `username` granting `scopes` (each `resource:operation`), valid
    /// until `expiry` (seconds since the epoch): it carries `user("<name>")` and a time check, so a
    /// service that authorizes it with `time(now)` refuses it once the credential behind it expired.
    pub fn token_for(
        &self,
        username: &str,
        scopes: &[String],
        expiry: u64,
    ) -> Result<Vec<u8>, biscuit_auth::error::Token> {
        let until = SystemTime::UNIX_EPOCH + Duration::from_secs(expiry);
        let mut builder = Biscuit::builder()
            .fact(fact("user", &[string(username)]))?
            .check_expiration_date(until);
        for scope in scopes {
            if let Some((resource, operation)) = scope.split_once(':') {
                builder = builder.fact(fact("right", &[string(resource), string(operation)]))?;
            }
        }
        builder.build(&self.root)?.to_vec()
    }
}
