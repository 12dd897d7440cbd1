//! Who is calling: `Authorization: Bearer <jwt>` or `Basic <base64(username:password)>`, checked
//! against the user directory. Revoked users are refused whichever way they come.

pub mod admin;
pub mod attempts;
pub mod biscuit;
pub mod credential_cache;
pub mod jwt;
pub mod password;
pub mod password_workers;
pub mod scopes;
pub mod totp;

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use hyper::header::{AUTHORIZATION, HeaderMap};

use self::credential_cache::CredentialCache;
use self::jwt::JwtKeys;
use self::password_workers::PasswordWorkers;
use crate::clock::Clock;
use crate::limits::Limits;
use crate::model::User;
use crate::user_directory::UserDirectory;

/// Why a caller was refused. The messages are safe to send: they never echo a credential.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing Authorization header")]
    Missing,
    #[error("malformed Authorization header")]
    Malformed,
    #[error("invalid or expired token")]
    BadToken,
    #[error("wrong username or password")]
    BadCredentials,
    #[error("user is revoked")]
    Revoked,
    #[error("two-factor users must authenticate with a JWT from /login")]
    TwoFactorNeedsJwt,
    #[error(transparent)]
    Store(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Password(#[from] password_workers::PasswordJobError),
    #[error(transparent)]
    Limited(#[from] crate::limits::Limited),
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: User,
    /// When the credential expires (seconds since the epoch): the JWT's `exp`, or now + jwt_expiry.
    pub expiry: u64,
}

enum Credentials {
    Bearer(String),
    Basic { username: String, password: String },
}

fn parse_credentials(headers: &HeaderMap) -> Result<Credentials, AuthError> {
    let value = headers.get(AUTHORIZATION).ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::Malformed)?.trim();
    let (scheme, rest) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Credentials::Bearer(rest.to_owned()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| AuthError::Malformed)?;
        let decoded = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
        // A password may contain ':'; a username may not.
        let (username, password) = decoded.split_once(':').ok_or(AuthError::Malformed)?;
        return Ok(Credentials::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        });
    }
    Err(AuthError::Malformed)
}

/// Who is calling, from the credentials a request carries: everything authentication touches and
/// nothing else (the HTTP layer holds one; the insert and subscribe paths take its `Identity`).
pub struct Authenticator {
    jwt: JwtKeys,
    users: Arc<dyn UserDirectory>,
    /// Every argon2 hash and verification runs here: bounded in threads, memory and queue.
    passwords: Arc<PasswordWorkers>,
    /// Basic credentials argon2 accepted recently, valid for the user revision they were checked on.
    credentials: CredentialCache,
    /// Password checks per client address.
    limits: Arc<Limits>,
    clock: Arc<Clock>,
}

impl Authenticator {
    pub fn new(
        jwt: JwtKeys,
        users: Arc<dyn UserDirectory>,
        passwords: Arc<PasswordWorkers>,
        limits: Arc<Limits>,
        clock: Arc<Clock>,
    ) -> Self {
        Self {
            jwt,
            users,
            passwords,
            credentials: CredentialCache::default(),
            limits,
            clock,
        }
    }

    /// Authenticates the caller of a request from `client` (the address whose password checks
    /// are counted).
    pub async fn authenticate(&self, headers: &HeaderMap, client: IpAddr) -> Result<Identity, AuthError> {
        match parse_credentials(headers)? {
            Credentials::Bearer(token) => {
                let claims = self.jwt.verify(&token).map_err(|_| AuthError::BadToken)?;
                let user = self.users.get(&claims.sub).await?.ok_or(AuthError::BadToken)?;
                // A password change, reset, revoke or tenant move since issue ends the token.
                let another_user = claims.uid.is_some_and(|uid| uid != user.id);
                if another_user || claims.generation != user.credential_generation {
                    return Err(AuthError::BadToken);
                }
                if user.revoked {
                    return Err(AuthError::Revoked);
                }
                Ok(Identity {
                    user,
                    expiry: claims.exp,
                })
            }
            Credentials::Basic { username, password } => {
                let user = self.verify_password(&username, password, client).await?;
                if user.two_factor {
                    return Err(AuthError::TwoFactorNeedsJwt);
                }
                // Good for as long as a JWT issued now would be.
                Ok(Identity {
                    user,
                    expiry: self.clock.now_secs() + self.jwt.lifetime(),
                })
            }
        }
    }

    /// Checks a username and password and refuses revoked users. A credential verified moments
    /// ago for the same revision of the user is taken from the cache; anything else costs one
    /// argon2 run on the bounded password workers (unknown users too, so that timing does not
    /// reveal which names exist), counted against `client`'s `--login_rate`.
    pub async fn verify_password(
        &self,
        username: &str,
        password: String,
        client: IpAddr,
    ) -> Result<User, AuthError> {
        let mut user = self.users.get(username).await?;
        let mut matches = self.password_matches(user.as_ref(), &password, client).await?;
        if !matches {
            // In a cluster this node's copy of the directory may not hold a change made on another
            // node moments ago (a password reset there, then a login here): a refusal is checked
            // once more against the store's own record when that holds another password.
            let latest = self.users.get_latest(username).await?;
            let hash = |user: &Option<User>| user.as_ref().map(|u| u.password_hash.clone());
            if hash(&latest) != hash(&user) {
                matches = self.password_matches(latest.as_ref(), &password, client).await?;
                user = latest;
            }
        }
        match user {
            Some(user) if matches => {
                if user.revoked {
                    Err(AuthError::Revoked)
                } else {
                    Ok(user)
                }
            }
            _ => Err(AuthError::BadCredentials),
        }
    }

    /// Whether `password` is `user`'s (never for an unknown user, whose check still costs an
    /// argon2 run): from the cache, or checked and then remembered.
    async fn password_matches(
        &self,
        user: Option<&User>,
        password: &str,
        client: IpAddr,
    ) -> Result<bool, AuthError> {
        if user.is_some_and(|user| self.credentials.accepts(user, password)) {
            self.limits.remembered_password_check(client)?;
            return Ok(true);
        }
        self.limits.password_check(client)?;
        let hash = user.map(|u| u.password_hash.clone());
        let matches = self.passwords.verify(password.to_owned(), hash).await?;
        if let (true, Some(user)) = (matches, user) {
            self.credentials.remember(user, password);
        }
        Ok(matches)
    }

    /// A JWT for `user`, issued now.
    pub fn issue_jwt(&self, user: &User) -> Result<String, jsonwebtoken::errors::Error> {
        self.jwt.issue(user, self.clock.now_secs())
    }
}
