//! hostd's container runtime: OCI bundles run with the kernel's own isolation.
//!
//! A container is made in two halves, in the style of crun:
//!
//! 1. **In the parent, before any clone** ([`spec`], [`plan`]): `config.json`
//!    is parsed and checked, and every value the container's init will need is
//!    prepared: `argv`/`envp` as C strings, the mount list with flags and
//!    in-root targets ([`mounts`]), capability masks ([`caps`]), the seccomp
//!    BPF program compiled from policy data ([`seccomp`]), rlimits, sysctls,
//!    the namespace files to join (opened and checked), the AppArmor or
//!    SELinux labels the host can apply ([`lsm`]). The cgroup is created
//!    with its limits ([`cgroups`]).
//! 2. **In the child, after `clone3`** ([`child`]): the init only walks the
//!    plan and makes raw system calls (namespaces joined, private mounts,
//!    bind the root onto itself, the spec's mounts, `/dev` nodes,
//!    `pivot_root` or, in the runtime's mount namespace, `chroot`, hostname,
//!    masked and read-only paths, rlimits, user, capabilities), then
//!    blocks on `exec.fifo` until `start`, runs the `startContainer` hooks,
//!    loads the seccomp filter and `execve`s. Parent and child talk
//!    over a socketpair in numbered steps ([`process`], [`child`]); a failing
//!    step comes back as a typed error naming the step, the mount or limit it
//!    worked on, and the errno.
//!
//! OCI hooks ([`hooks`]) run from the parent while the init waits at a sync
//! step (`prestart`, `createRuntime`), from the init itself
//! (`createContainer`, `startContainer`), and from the later verbs
//! (`poststart`, `poststop`).
//!
//! [`container::Runtime`] implements the OCI lifecycle (`create`, `start`,
//! `state`, `kill`, `delete`, `run`) with runc's state JSON, keeping state
//! under `/run/hostd/oci/<id>` ([`state`]); `hostd oci` is its command line.
//! All `unsafe` lives in [`sys`].

pub mod caps;
pub mod cgroups;
pub mod child;
pub mod container;
pub mod hooks;
pub mod lsm;
pub mod mount_source;
pub mod mounts;
pub mod plan;
pub mod process;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod sys;
mod syscalls_x86_64;

pub use container::{Console, CreateOptions, Log, RunOptions, Runtime, RuntimeError, DEFAULT_ROOT};
