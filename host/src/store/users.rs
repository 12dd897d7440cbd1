//! The user directory: get, create-if-absent, update in place. Each call is one LMDB transaction, so
//! a username check and its write cannot interleave with another writer.

use super::Store;
use crate::model::User;
use crate::storage::{StorageError, StorageResult, storable_name};

impl Store {
    /// The user named `username`; a name that could never have been stored is simply unknown.
    pub fn get_user(&self, username: &str) -> StorageResult<Option<User>> {
        if !storable_name(username) {
            return Ok(None);
        }
        let rtxn = self.env.read_txn()?;
        Ok(self.users.get(&rtxn, username)?)
    }

    pub fn list_users(&self) -> StorageResult<Vec<User>> {
        let rtxn = self.env.read_txn()?;
        let users = self.users.iter(&rtxn)?.map(|entry| entry.map(|(_, user)| user));
        Ok(users.collect::<Result<_, _>>()?)
    }

    /// Stores `user` unless its username is taken; returns whether it was stored.
    pub fn create_user(&self, user: &User) -> StorageResult<bool> {
        if !storable_name(&user.username) {
            return Err(StorageError::BadKey);
        }
        let mut wtxn = self.env.write_txn()?;
        if self.users.get(&wtxn, &user.username)?.is_some() {
            return Ok(false);
        }
        self.users.put(&mut wtxn, &user.username, user)?;
        wtxn.commit()?;
        Ok(true)
    }

    /// Applies `change` to the stored user and returns the new record; `change` may decline by
    /// returning false: then nothing is written and the answer is `None`, as for an unknown user. The check and the write share one transaction.
    pub fn update_user_if(
        &self,
        username: &str,
        change: impl FnOnce(&mut User) -> bool,
    ) -> StorageResult<Option<User>> {
        if !storable_name(username) {
            return Ok(None);
        }
        let mut wtxn = self.env.write_txn()?;
        let Some(mut user) = self.users.get(&wtxn, username)? else {
            return Ok(None);
        };
        if !change(&mut user) {
            return Ok(None);
        }
        user.revision += 1;
        self.users.put(&mut wtxn, username, &user)?;
        wtxn.commit()?;
        Ok(Some(user))
    }

    /// Removes the user's record; answers it.
    pub fn delete_user(&self, username: &str) -> StorageResult<Option<User>> {
        if !storable_name(username) {
            return Ok(None);
        }
        let mut wtxn = self.env.write_txn()?;
        let Some(user) = self.users.get(&wtxn, username)? else {
            return Ok(None);
        };
        self.users.delete(&mut wtxn, username)?;
        wtxn.commit()?;
        Ok(Some(user))
    }
}
