//! Backing devices in use in this process. The pm file's lock keeps a volume from
//! being opened twice through its pm file; this keeps one `spdk_reduce_backing_dev`
//! object from serving two operations at once (an init over a device that a volume is
//! being loaded from, a destroy racing an init that has not written its superblock
//! yet). Init, load and destroy claim the device first (`EBUSY` when it is claimed);
//! the claim ends when a failed init or load, or a destroy, reports, and for a loaded
//! volume when it is unloaded: always before the caller's callback runs, so the
//! callback may use the device again.

use std::collections::BTreeSet;
use std::sync::Mutex;

use super::types::spdk_reduce_backing_dev;
use crate::error::{Errno, Error, Result};

/// The addresses of the devices claimed now.
static CLAIMED: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());

fn claimed() -> std::sync::MutexGuard<'static, BTreeSet<usize>> {
    // A panic elsewhere while the set was held cannot leave it half-changed: insert
    // and remove are single steps.
    CLAIMED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A device claimed by one operation or loaded volume; dropping it ends the claim.
pub(crate) struct Claim(usize);

impl Claim {
    /// Claims `dev` for `what`: `EBUSY` (logged) when it is claimed already.
    pub(crate) fn take(what: &str, dev: *const spdk_reduce_backing_dev) -> Result<Claim> {
        let key = dev as usize;
        if claimed().insert(key) {
            return Ok(Claim(key));
        }
        Err(Error::new(
            Errno::EBUSY,
            format!(
                "{what}: backing_dev {dev:p} is in use: a volume on it is loaded, or an init, load or destroy on it has not completed"
            ),
        )
        .logged())
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        claimed().remove(&self.0);
    }
}
