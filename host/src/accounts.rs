//! Every change to a user: create, update, revoke, reset codes and password resets, and the login
//! code step. The HTTP handlers parse and authorize; the rules live here.
//!
//! A new password (set or reset), a revoke or unrevoke, and a tenant move end the user's JWTs,
//! remembered Basic credentials and open streams: each bumps the record's credential generation,
//! which every JWT carries and every stream compares. This module is the only place that bumps it.
//! Every change is a compare-and-set through the user directory, which tells the user's open
//! streams.

use std::sync::Arc;

use serde_json::Value;
use uuid::Uuid;

use crate::auth::password_workers::{PasswordJobError, PasswordWorkers};
use crate::auth::totp;
use crate::clock::Clock;
use crate::model::{PasswordReset, User};
use crate::storage::StorageError;
use crate::user_directory::UserDirectory;
use crate::validate;

/// Why an account change was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// A field is not acceptable; the message names it.
    #[error("{0}")]
    Invalid(String),
    #[error("username already taken")]
    Taken,
    #[error("user not found")]
    NotFound,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Password(#[from] PasswordJobError),
    /// Something that should not fail did (logged, never sent).
    #[error("{0}")]
    Internal(String),
}

/// A user to create.
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub tenant_name: String,
    pub email: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub data: Option<Value>,
    pub two_factor: bool,
}

/// Changes to a user: `None` leaves a field as it is; `Some(None)` clears email, scopes or data.
pub struct UserUpdate {
    pub tenant_name: Option<String>,
    pub password: Option<String>,
    pub email: Option<Option<String>>,
    pub scopes: Option<Option<Vec<String>>>,
    pub data: Option<Option<Value>>,
    pub two_factor: Option<bool>,
}

/// The account rules and what they touch.
pub struct Accounts {
    users: Arc<dyn UserDirectory>,
    /// New passwords are hashed on the bounded argon2 workers.
    passwords: Arc<PasswordWorkers>,
    clock: Arc<Clock>,
    /// `--password_checker`: refuse passwords zxcvbn scores below 3.
    password_checker: bool,
    /// `--totp_duration`: how long a reset code lives, in seconds.
    reset_code_lifetime: u64,
}

impl Accounts {
    pub fn new(
        users: Arc<dyn UserDirectory>,
        passwords: Arc<PasswordWorkers>,
        clock: Arc<Clock>,
        password_checker: bool,
        reset_code_lifetime: u64,
    ) -> Self {
        Self {
            users,
            passwords,
            clock,
            password_checker,
            reset_code_lifetime,
        }
    }

    /// The stored user named `username`.
    pub async fn existing(&self, username: &str) -> Result<User, AccountError> {
        self.users.get(username).await?.ok_or(AccountError::NotFound)
    }

    /// A new password: non-empty, and strong enough when `--password_checker` is on.
    pub fn check_new_password(&self, password: &str, username: &str) -> Result<(), AccountError> {
        validate::password(password).map_err(AccountError::Invalid)?;
        if self.password_checker {
            validate::password_strength(password, username).map_err(AccountError::Invalid)?;
        }
        Ok(())
    }

    /// Creates a user; of concurrent creates of one name, exactly one wins.
    pub async fn create(&self, new: NewUser) -> Result<(), AccountError> {
        validate::username(&new.username).map_err(AccountError::Invalid)?;
        validate::name("tenant_name", &new.tenant_name).map_err(AccountError::Invalid)?;
        self.check_new_password(&new.password, &new.username)?;
        if let Some(email) = &new.email {
            validate::email(email).map_err(AccountError::Invalid)?;
        }
        if let Some(scopes) = &new.scopes {
            validate::scopes(scopes).map_err(AccountError::Invalid)?;
        }
        // Before the hash: a taken name costs no argon2 run.
        if self.users.get(&new.username).await?.is_some() {
            return Err(AccountError::Taken);
        }
        let user = User {
            id: Uuid::new_v4(),
            username: new.username,
            password_hash: self.passwords.hash(new.password).await?,
            revoked: false,
            tenant_name: new.tenant_name,
            email: new.email,
            scopes: new.scopes,
            data: new.data,
            two_factor: new.two_factor,
            totp_secret: new.two_factor.then(totp::new_secret),
            last_totp_step: None,
            reset: None,
            revision: 0,
            credential_generation: 0,
        };
        let (username, tenant) = (user.username.clone(), user.tenant_name.clone());
        // Checked again by the directory, atomically: two concurrent creates cannot both win.
        if !self.users.create(user).await? {
            return Err(AccountError::Taken);
        }
        tracing::info!(username, tenant, "user created");
        Ok(())
    }

    /// Applies `update` to `username`. A new password or tenant ends the user's credentials; an
    /// email-, scope-, data- or two-factor-only update ends nothing (a scope change applies to open
    /// streams at once, through the directory's notice).
    pub async fn update(&self, username: &str, update: UserUpdate) -> Result<(), AccountError> {
        if let Some(tenant) = &update.tenant_name {
            validate::name("tenant_name", tenant).map_err(AccountError::Invalid)?;
        }
        if let Some(Some(scopes)) = &update.scopes {
            validate::scopes(scopes).map_err(AccountError::Invalid)?;
        }
        if let Some(Some(email)) = &update.email {
            validate::email(email).map_err(AccountError::Invalid)?;
        }
        let password_hash = match update.password {
            Some(password) => {
                self.check_new_password(&password, username)?;
                Some(self.passwords.hash(password).await?)
            }
            None => None,
        };
        let change = move |user: &mut User| {
            if update.tenant_name.is_some() || password_hash.is_some() {
                end_credentials(user);
            }
            if let Some(tenant) = &update.tenant_name {
                tenant.clone_into(&mut user.tenant_name);
            }
            if let Some(hash) = &password_hash {
                hash.clone_into(&mut user.password_hash);
            }
            if let Some(email) = &update.email {
                user.email.clone_from(email);
            }
            if let Some(scopes) = &update.scopes {
                user.scopes.clone_from(scopes);
            }
            if let Some(data) = &update.data {
                user.data.clone_from(data);
            }
            match update.two_factor {
                // Enabling keeps an existing secret, so an app that already scanned it keeps working.
                Some(true) if user.totp_secret.is_none() => user.totp_secret = Some(totp::new_secret()),
                Some(false) => {
                    user.totp_secret = None;
                    user.last_totp_step = None;
                }
                _ => {}
            }
            if let Some(two_factor) = update.two_factor {
                user.two_factor = two_factor;
            }
        };
        self.users
            .update(username, change)
            .await?
            .ok_or(AccountError::NotFound)?;
        Ok(())
    }

    /// Revokes or unrevokes `username`; ends the user's credentials either way (an unrevoked user
    /// logs in afresh).
    pub async fn set_revoked(&self, username: &str, revoked: bool) -> Result<(), AccountError> {
        let change = move |user: &mut User| {
            user.revoked = revoked;
            end_credentials(user);
        };
        self.users
            .update(username, change)
            .await?
            .ok_or(AccountError::NotFound)?;
        tracing::info!(username, revoked, "user revocation changed");
        Ok(())
    }

    /// Deletes `username`: its JWTs, remembered Basic credentials and open streams end at once
    /// (on every node), and the name is free again. Answers the record deleted.
    pub async fn delete(&self, username: &str) -> Result<User, AccountError> {
        let user = self.users.delete(username).await?.ok_or(AccountError::NotFound)?;
        tracing::info!(username, tenant = user.tenant_name, "user deleted");
        Ok(user)
    }

    /// A one-time password-reset code for `username`, valid for `--totp_duration` seconds; a new
    /// one replaces the previous one.
    pub async fn issue_reset_code(&self, username: &str) -> Result<String, AccountError> {
        let reset = PasswordReset {
            secret: totp::new_secret(),
            issued_at: self.clock.now_secs(),
        };
        let code = totp::reset_code(&reset.secret, self.reset_code_lifetime, reset.issued_at)
            .map_err(|e| AccountError::Internal(format!("generating a reset code: {e}")))?;
        self.users
            .update(username, move |user| user.reset = Some(reset.clone()))
            .await?
            .ok_or(AccountError::NotFound)?;
        Ok(code)
    }

    /// Whether `code` is `user`'s current, unexpired reset code.
    pub fn reset_code_matches(&self, user: &User, code: &str) -> bool {
        reset_is_valid(user.reset.as_ref(), &self.clock, self.reset_code_lifetime, code)
    }

    /// Sets `username`'s password with its reset code, which it consumes: checked again in the
    /// compare-and-set, so of two resets racing with one code one wins. False: the code is wrong,
    /// used or expired.
    pub async fn reset_password(
        &self,
        username: &str,
        code: String,
        password: String,
    ) -> Result<bool, AccountError> {
        let hash = self.passwords.hash(password).await?;
        let (clock, lifetime) = (self.clock.clone(), self.reset_code_lifetime);
        let consume = Box::new(move |user: &mut User| {
            let valid = reset_is_valid(user.reset.as_ref(), &clock, lifetime, &code);
            if valid {
                user.password_hash.clone_from(&hash);
                user.reset = None;
                end_credentials(user);
            }
            valid
        });
        let reset = self.users.update_if(username, consume).await?.is_some();
        if reset {
            tracing::info!(username, "password reset");
        }
        Ok(reset)
    }

    /// Records the step of a login code `username` used, so that the same code cannot log in twice
    /// (checked in the compare-and-set: two logins racing with one code, one wins). False: a code
    /// of this step or a later one was used already.
    pub async fn use_login_step(&self, username: &str, step: u64) -> Result<bool, AccountError> {
        let record = Box::new(move |stored: &mut User| {
            let fresh = stored.last_totp_step.is_none_or(|last| step > last);
            if fresh {
                stored.last_totp_step = Some(step);
            }
            fresh
        });
        Ok(self.users.update_if(username, record).await?.is_some())
    }
}

fn reset_is_valid(reset: Option<&PasswordReset>, clock: &Clock, lifetime: u64, code: &str) -> bool {
    reset.is_some_and(|reset| {
        clock.now_secs() < reset.issued_at.saturating_add(lifetime)
            && totp::reset_code_matches(&reset.secret, lifetime, reset.issued_at, code)
    })
}

/// Ends the user's JWTs, remembered Basic credentials and open streams.
fn end_credentials(user: &mut User) {
    user.credential_generation += 1;
}
