//! The rules for changing a user record that end its credentials. A new password (set or reset),
//! a revoke or unrevoke, and a tenant move end the user's JWTs, remembered Basic credentials and
//! open streams: each bumps the record's credential generation, which every JWT carries and every
//! stream compares. This module is the only place that bumps it; handlers call these changes
//! inside their compare-and-set updates.

use crate::model::User;

/// Sets a new password hash; ends the user's credentials.
pub fn set_password(user: &mut User, hash: &str) {
    hash.clone_into(&mut user.password_hash);
    end_credentials(user);
}

/// Revokes or unrevokes the user; ends the user's credentials either way (an unrevoked user logs
/// in afresh).
pub fn set_revoked(user: &mut User, revoked: bool) {
    user.revoked = revoked;
    end_credentials(user);
}

/// Moves the user to `tenant`: a moved user must not keep receiving the old tenant's events.
pub fn move_to_tenant(user: &mut User, tenant: &str) {
    tenant.clone_into(&mut user.tenant_name);
    end_credentials(user);
}

fn end_credentials(user: &mut User) {
    user.credential_generation += 1;
}
