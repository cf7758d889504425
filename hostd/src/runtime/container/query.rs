//! `state` and `list`: the runc-format view of containers.

use std::fs;

use super::runtime::{state_err, Runtime, RuntimeError};
use crate::runtime::state::OciState;

impl Runtime {
    /// The state of container `id`, as runc prints it.
    pub fn state(&self, id: &str) -> Result<OciState, RuntimeError> {
        let (_, record, status) = self.load(id)?;
        Ok(record.oci_state(status))
    }

    /// The states of all containers under the root, sorted by id.
    pub fn list(&self) -> Result<Vec<OciState>, RuntimeError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(state_err(&self.root)(e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str() else { continue };
            if let Ok(s) = self.state(id) {
                out.push(s);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}
