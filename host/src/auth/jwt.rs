//! HS256 JWTs: `iss: "Broker"`, `sub: username`, `aud: scopes joined with ","`, `iat`, `exp`, and
//! `generation`, the user's credential generation when issued (see `User::credential_generation`),
//! and `uid`, the user's id.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::model::User;

const ISSUER: &str = "Broker";

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    #[serde(default)]
    pub generation: u64,
    /// The user's id: a user deleted and created again under the same name is another user, and
    /// the first one's tokens are not its (tokens from before this claim carry none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<uuid::Uuid>,
}

/// Signing and checking keys, built once from `--jwt_secret`.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    expiry_secs: u64,
}

impl JwtKeys {
    pub fn new(secret: &str, expiry_secs: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        // `aud` carries the scopes for other services; Broker does not restrict on it.
        validation.validate_aud = false;
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            expiry_secs,
        }
    }

    /// How long an issued token lives, in seconds (`--jwt_expiry`).
    pub fn lifetime(&self) -> u64 {
        self.expiry_secs
    }

    /// A token for `user` issued at `now` (seconds since the epoch).
    pub fn issue(&self, user: &User, now: u64) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = Claims {
            iss: ISSUER.to_owned(),
            sub: user.username.clone(),
            aud: user.scope_list().join(","),
            iat: now,
            exp: now + self.expiry_secs,
            generation: user.credential_generation,
            uid: Some(user.id),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map(|data| data.claims)
    }
}
