//! The raw Linux calls the image store needs, each in a small safe wrapper.
//!
//! Everything here works relative to a directory file descriptor so the
//! unpacker never hands the kernel a path it built from an untrusted archive
//! and then lets the kernel follow symlinks in it. The only `unsafe` of the
//! store lives in this file; every block says why it is sound. Callers never
//! see a raw pointer.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `openat2` resolve flag: fail if resolution leaves the starting directory.
pub(super) const RESOLVE_BENEATH: u64 = libc::RESOLVE_BENEATH;
/// `openat2` resolve flag: fail on any symlink in the path.
pub(super) const RESOLVE_NO_SYMLINKS: u64 = libc::RESOLVE_NO_SYMLINKS;
/// `openat2` resolve flag: fail on `/proc/*/fd`-style magic links.
pub(super) const RESOLVE_NO_MAGICLINKS: u64 = libc::RESOLVE_NO_MAGICLINKS;
/// `openat2` resolve flag: fail on crossing into another mount.
pub(super) const RESOLVE_NO_XDEV: u64 = libc::RESOLVE_NO_XDEV;

/// Turns a C return code of -1 into the thread's `errno` as an `io::Error`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `struct open_how` of `linux/openat2.h` (libc's copy cannot be built with a
/// struct literal because it is `#[non_exhaustive]`).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(2)`: opens `path` relative to `dir` under the `resolve` restrictions.
///
/// `O_CLOEXEC` is always added.
pub(super) fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let flags = u64::try_from(flags | libc::O_CLOEXEC)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "negative open flags"))?;
    let how = OpenHow {
        flags,
        mode: u64::from(mode),
        resolve,
    };
    // SAFETY: `path` is a NUL-terminated string and `how` a properly laid out
    // `struct open_how`; both outlive the call and the kernel only reads them
    // (it is told the struct's exact size). `dir` is an open descriptor for
    // the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            std::ptr::from_ref(&how),
            std::mem::size_of::<OpenHow>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(ret)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "openat2 returned a bad fd"))?;
    // SAFETY: the kernel just returned `fd` as a new descriptor that nothing
    // else owns, so `OwnedFd` may take ownership and close it on drop.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `mkdirat(2)`.
pub(super) fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is open.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })?;
    Ok(())
}

/// `symlinkat(2)`: creates `name` in `dir` pointing at `target` (not resolved).
pub(super) fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and outlive the call; `dir` is open.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })?;
    Ok(())
}

/// `linkat(2)` without `AT_SYMLINK_FOLLOW`: a symlink is linked, not its target.
pub(super) fn linkat(
    old_dir: BorrowedFd<'_>,
    old_name: &CStr,
    new_dir: BorrowedFd<'_>,
    new_name: &CStr,
) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and outlive the call; both
    // descriptors are open.
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            old_name.as_ptr(),
            new_dir.as_raw_fd(),
            new_name.as_ptr(),
            0,
        )
    })?;
    Ok(())
}

/// `mknodat(2)`.
pub(super) fn mknodat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: libc::mode_t,
    dev: libc::dev_t,
) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is open.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, dev) })?;
    Ok(())
}

/// `unlinkat(2)` of a non-directory.
pub(super) fn unlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is open.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) })?;
    Ok(())
}

/// `fstatat(2)` with `AT_SYMLINK_NOFOLLOW`: the file type and mode bits of
/// `name` in `dir`, or `None` when it does not exist.
pub(super) fn lstat_mode(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<libc::mode_t>> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is NUL-terminated and outlives the call; `st` points to
    // writable memory of the size of `struct stat`; `dir` is open.
    let ret = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    match check(ret) {
        Ok(_) => {
            // SAFETY: fstatat returned success, so it filled in `st`.
            let st = unsafe { st.assume_init() };
            Ok(Some(st.st_mode))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// `fchownat(2)` with `AT_SYMLINK_NOFOLLOW` (changes a symlink itself).
pub(super) fn lchownat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    uid: libc::uid_t,
    gid: libc::gid_t,
) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is open.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// `utimensat(2)` with `AT_SYMLINK_NOFOLLOW`: sets access and modification
/// time of `name` (a symlink itself, not its target).
pub(super) fn lutimensat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    secs: i64,
    nanos: u32,
) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: secs,
        tv_nsec: libc::c_long::from(nanos),
    };
    let times = [ts, ts];
    // SAFETY: `name` is NUL-terminated, `times` is an array of two timespecs
    // as the call requires; both outlive the call; `dir` is open.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// `fsetxattr(2)`: sets extended attribute `name` of the open file `fd`.
pub(super) fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated, `value` is valid for `value.len()`
    // bytes; both outlive the call and the kernel only reads them; `fd` is open.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast::<libc::c_void>(),
            value.len(),
            0,
        )
    })?;
    Ok(())
}

/// `fgetxattr(2)`: the value of extended attribute `name` of `fd`, or `None`
/// when the file does not have it. Values longer than 4 KiB are an error.
#[cfg(test)]
pub(super) fn fgetxattr(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: `name` is NUL-terminated and `buf` is writable for `buf.len()`
    // bytes; both outlive the call; `fd` is open.
    let ret = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast::<libc::c_void>(),
            buf.len(),
        )
    };
    if ret < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENODATA) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    buf.truncate(usize::try_from(ret).unwrap_or(0));
    Ok(Some(buf))
}
