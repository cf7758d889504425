//! hostd's general system-call layer: the only place `init/` and `daemon/`
//! reach the kernel through (the OCI runtime keeps its own `runtime::sys`).
//!
//! Each wrapper turns Rust values into one call and the answer into an
//! `io::Result`; callers never see a raw pointer. Most calls go through
//! [`rustix`], whose wrappers are safe. Hand-written `unsafe` is left only
//! where no safe crate API does the job, each block with a `// SAFETY:`
//! comment:
//!
//! - glibc's own state: `fork` (it runs glibc's fork handlers), `execv`,
//!   the signal mask (`pthread_sigmask`, `sigwait`, `sigtimedwait`),
//!   `malloc_trim` and `mallopt`;
//! - the code a child runs between fork and exec ([`unblock_signals_on_exec`],
//!   [`make_session_leader_with_tty`]), which `Command::pre_exec` makes
//!   `unsafe` whatever it calls;
//! - calls rustix lacks: `kill(-1, ...)`, `SO_BINDTODEVICE` and
//!   `ioctl(NS_GET_NSTYPE)`;
//! - `unshare`, which rustix marks unsafe for `CLONE_FILES` (refused here);
//! - taking ownership of descriptors inherited across `execve`
//!   ([`take_inherited_fds`]).
//!
//! The areas: [`fs`] (mounts, device nodes), [`mountinfo`] (reading a mount
//! table), [`fd`] (pipes, descriptor
//! flags, inherited descriptors), [`namespace`] (the calling thread's
//! namespaces: `unshare`, `setns`), [`event`] (`poll`, `epoll`, `eventfd`),
//! [`process`] (fork, exec, wait, kill, limits), [`signal`] (blocked signals
//! waited for synchronously), [`socket`] (netlink routing and uevents, UDP, unix sockets with
//! descriptor passing) and [`system`] (modules, reboot, hostname, clocks,
//! randomness, the allocator). Everything is re-exported here, so callers
//! write `os::mount`, `os::pipe`, ...

pub mod event;
pub mod fd;
pub mod fs;
pub mod mountinfo;
pub mod namespace;
pub mod process;
pub mod signal;
pub mod socket;
pub mod system;

pub use event::{poll_readable, Epoll, EventFd};
pub use fd::{dup2, pipe, pipe_blocking, set_cloexec, set_nonblocking, take_inherited_fds};
pub use fs::{
    bind_mount, is_pseudo_fs, mknod, mount, mount_move, open_in_root, remount, set_propagation,
    statfs_type, unmount, MountFlags, MountPropagationFlags, UnmountFlags,
};
pub use mountinfo::{parse_mountinfo, root_is_shared, MountEntry};
pub use namespace::{enter_net_ns, namespace_type, unshare, UnshareFlags, NSFS_MAGIC};
pub use process::{
    execv, fork, fork_sibling, geteuid, kill, kill_all, make_session_leader_with_tty, raise_limit,
    raise_nofile, reap_child, set_child_subreaper, set_thread_nice, Limit, Reaped,
};
pub use signal::{unblock_signals_on_exec, SignalSet};
pub use socket::{
    accept_with_uid, netlink_netfilter_socket, netlink_route_socket, peer_pid, recv_uevent,
    recv_with_fds, reserve_port, send_with_fds, seqpacket_connect, seqpacket_listen,
    set_receive_timeout, udp_socket_on_device, uevent_socket, UeventPacket, MAX_FDS,
};
pub use system::{
    boottime, boottime_ms, finit_module, hostname, limit_malloc_arenas, random_bytes_insecure,
    reboot, set_ctrl_alt_del, sethostname, trim_heap, RebootAction, MODULE_INIT_COMPRESSED_FILE,
};
