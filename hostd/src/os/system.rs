//! The machine as a whole: kernel modules, reboot and Ctrl-Alt-Del, the
//! hostname, the boot clock, the kernel's random numbers, and glibc's
//! allocator.

use std::ffi::CStr;
use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use rustix::system::RebootCommand;

/// `finit_module` flag: the file is compressed and the kernel should decompress it
/// (Linux >= 6.4 with `CONFIG_MODULE_DECOMPRESS`; older kernels answer `EINVAL`).
pub const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

/// `finit_module(2)`: loads the kernel module in the open file `module`.
///
/// Fails with `EEXIST` when a module of that name is already loaded.
pub fn finit_module(module: BorrowedFd<'_>, params: &CStr, flags: u32) -> io::Result<()> {
    let flags = libc::c_int::try_from(flags)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "module flags out of range"))?;
    rustix::system::finit_module(module, params, flags)?;
    Ok(())
}

/// What [`reboot`] asks the kernel to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootAction {
    /// Power the machine off.
    PowerOff,
    /// Restart the machine.
    Restart,
    /// Stop the CPUs but leave the power on.
    Halt,
}

/// Syncs file systems, then `reboot(2)`. Returns only if the kernel refused.
pub fn reboot(action: RebootAction) -> io::Error {
    let cmd = match action {
        RebootAction::PowerOff => RebootCommand::PowerOff,
        RebootAction::Restart => RebootCommand::Restart,
        RebootAction::Halt => RebootCommand::Halt,
    };
    rustix::fs::sync();
    match rustix::system::reboot(cmd) {
        Err(e) => e.into(),
        // Only the Ctrl-Alt-Del commands return success.
        Ok(()) => io::Error::other("reboot(2) returned"),
    }
}

/// Whether Ctrl-Alt-Del reboots at once (`true`) or sends SIGINT to PID 1
/// (`false`, `LINUX_REBOOT_CMD_CAD_OFF`).
pub fn set_ctrl_alt_del(immediate_reboot: bool) -> io::Result<()> {
    let cmd = if immediate_reboot {
        RebootCommand::CadOn
    } else {
        RebootCommand::CadOff
    };
    rustix::system::reboot(cmd)?;
    Ok(())
}

/// The host name (`uname(2)`'s nodename).
pub fn hostname() -> io::Result<String> {
    Ok(rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned())
}

/// `sethostname(2)`.
pub fn sethostname(name: &str) -> io::Result<()> {
    rustix::system::sethostname(name.as_bytes())?;
    Ok(())
}

/// Time since the kernel started, suspend included (`CLOCK_BOOTTIME`).
///
/// Returns zero if the clock cannot be read (it exists since Linux 2.6.39).
pub fn boottime() -> Duration {
    use rustix::time::{clock_gettime_dynamic, DynamicClockId};
    // The fallible form: rustix's `clock_gettime` panics if the clock fails.
    let Ok(ts) = clock_gettime_dynamic(DynamicClockId::Boottime) else {
        return Duration::ZERO;
    };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0);
    Duration::new(secs, nanos)
}

/// Milliseconds since the kernel started (see [`boottime`]).
pub fn boottime_ms() -> u64 {
    u64::try_from(boottime().as_millis()).unwrap_or(u64::MAX)
}

/// Fills `buf` from the kernel's RNG without waiting for it to be seeded
/// (`getrandom(GRND_INSECURE)`): early in boot, reading /dev/urandom makes
/// the kernel gather jitter entropy first, which takes a second under
/// emulation. Good for DHCP transaction ids, not for keys.
pub fn random_bytes_insecure(buf: &mut [u8]) -> io::Result<()> {
    use rustix::rand::{getrandom, GetRandomFlags};
    let mut filled = 0;
    while filled < buf.len() {
        match getrandom(&mut buf[filled..], GetRandomFlags::INSECURE) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Returns the free memory at the top of the heap to the kernel
/// (`malloc_trim(0)`), e.g. after boot dropped its module index.
pub fn trim_heap() {
    // SAFETY: malloc_trim takes an integer and only touches malloc's own state.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Limits glibc's malloc to one arena, so helper threads do not each reserve
/// and touch an arena of their own (keeps PID 1's resident memory small).
pub fn limit_malloc_arenas() {
    // SAFETY: mallopt takes two integers; M_ARENA_MAX is a valid parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boottime_is_monotonic_and_nonzero() {
        let a = boottime();
        let b = boottime();
        assert!(a > Duration::ZERO);
        assert!(b >= a);
        assert!(boottime_ms() >= u64::try_from(a.as_millis()).unwrap());
    }

    #[test]
    fn random_bytes_fill_the_buffer() {
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        random_bytes_insecure(&mut a).unwrap();
        random_bytes_insecure(&mut b).unwrap();
        assert_ne!(a, b);
        random_bytes_insecure(&mut []).unwrap();
    }

    #[test]
    fn module_flags_must_fit_an_int() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsFd::as_fd(&file);
        let err = finit_module(fd, c"", u32::MAX).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
