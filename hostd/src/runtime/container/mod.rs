//! The OCI lifecycle, one file per verb: [`create`](Runtime::create),
//! [`start`](Runtime::start), [`state`](Runtime::state),
//! [`kill`](Runtime::kill), [`delete`](Runtime::delete), [`exec`](Runtime::exec) and
//! [`run`](Runtime::run) (create + start + wait + delete).
//!
//! A [`Runtime`] owns the state root (`/run/hostd/oci` by default), a cgroup
//! backend and a log. Containers outlive the process that created them: every
//! verb after `create` finds the container through its state directory.

mod create;
mod delete;
mod exec;
mod kill;
mod query;
mod run;
mod runtime;
mod start;

pub use create::{Console, Container, CreateOptions};
pub use kill::parse_signal;
pub use run::RunOptions;
pub use runtime::{check_id, Log, Runtime, RuntimeError, DEFAULT_ROOT};
