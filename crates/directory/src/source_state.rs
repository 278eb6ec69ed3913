//! Directory state driven by the source's answers (WorkOS's `invalid_credentials`).

use idbridge_model::{DirectoryState, Timestamp};
use idbridge_store::ChangeSet;

use crate::engine::{from_bytes, to_bytes, DirectoryEngine};
use crate::error::{EngineError, Result};
use crate::layout;
use crate::types::DirectoryRecord;

impl DirectoryEngine {
    /// The source refused the credentials idbridge reads it with (an LDAP bind answered
    /// invalidCredentials): the directory shows `invalid_credentials` — WorkOS's state for
    /// it — until a run succeeds again, whose commit makes it `linked` (with `dsync.activated`,
    /// as any return to `linked`). Returns whether the state changed; a directory being
    /// deleted is left alone.
    pub fn mark_invalid_credentials(&self, dir_id: &str) -> Result<bool> {
        let _span =
            tracing::info_span!("dsync.invalid_credentials", directory_id = dir_id).entered();
        let lock = self.dir_lock(dir_id);
        let _held = Self::guard(&lock);
        let old = self
            .get_raw(layout::DIRECTORIES, dir_id)?
            .ok_or_else(|| EngineError::not_found("directory", dir_id))?;
        let mut rec: DirectoryRecord = from_bytes(layout::DIRECTORIES, dir_id, &old)?;
        if matches!(
            rec.directory.state,
            DirectoryState::InvalidCredentials | DirectoryState::Deleting
        ) {
            return Ok(false);
        }
        rec.directory.state = DirectoryState::InvalidCredentials;
        rec.directory.updated_at = Timestamp::now();
        let mut cs = ChangeSet::new();
        cs.require_equals(layout::DIRECTORIES, dir_id, Some(old))
            .put(layout::DIRECTORIES, dir_id, to_bytes(&rec)?);
        self.store.commit(cs)?;
        tracing::warn!(
            directory_id = dir_id,
            "directory state: invalid_credentials"
        );
        Ok(true)
    }
}
