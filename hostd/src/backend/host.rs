//! Which backend this host runs: the kernel's own (Linux today; the
//! others are designs in docs/backends.md).

use std::path::Path;
use std::sync::Arc;

use mkhost_shared::boot_config::MemoryCgroups;

use super::linux::Linux;
use super::Backend;

/// Why this host's backend could not start.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StartFailed(Box<dyn std::error::Error + Send + Sync>);

/// Starts the backend of the kernel this runs on (Linux: lowers the
/// daemon's OOM score, takes over or forks the zygote under `state`,
/// raises the open-file limit). Containers without a memory limit share
/// their memory accounting when `memory_cgroups` says
/// [`MemoryCgroups::Limited`].
///
/// # Safety
///
/// The process must have a single thread: the backend may fork.
pub unsafe fn start(
    state: &Path,
    memory_cgroups: MemoryCgroups,
) -> Result<Arc<dyn Backend>, StartFailed> {
    // SAFETY: the caller guarantees the process has a single thread.
    match unsafe { Linux::start(state, memory_cgroups) } {
        Ok(backend) => Ok(Arc::new(backend)),
        Err(e) => Err(StartFailed(Box::new(e))),
    }
}
