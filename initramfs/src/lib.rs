//! Building blocks for an initramfs: everything between "a set of files on the build
//! host" and "one compressed blob the kernel unpacks into its first root filesystem".
//!
//! The builder (crate `mkhost`) uses the four modules as plain functions, in this order:
//!
//! 1. [`modules`] answers "which kernel modules must go in?". It indexes
//!    `/lib/modules/<release>` (from `modules.dep` when depmod has run, otherwise by
//!    reading each `.ko`'s `.modinfo` ELF section), then computes the dependency
//!    closure of the modules a profile asks for, in load order, and renders the
//!    depmod files for just that subset.
//! 2. [`elf`] answers "which shared libraries does this binary need?": the ELF
//!    interpreter plus the `DT_NEEDED` closure, searched like `ld.so` does. mkhost's
//!    own binaries are static, so this matters only for extra tools a profile adds.
//! 3. [`cpio`] lays the files out as an in-memory tree ([`cpio::Archive`]) and writes
//!    it as a deterministic cpio "newc" archive, the only format the kernel unpacks.
//!    An independent reader ([`cpio::read_newc`]) lets tests check the writer.
//! 4. [`compress`] squeezes the archive with zstd, pinned so the output is
//!    reproducible (single-threaded) and the kernel can stream it (window <= 8 MiB).
//!
//! Nothing here reads the clock or depends on directory iteration order: the same
//! inputs always give byte-identical output. Each module has its own error enum whose
//! variants carry the context (path, offset, module name) needed to act on them.

pub mod compress;
pub mod cpio;
pub mod elf;
pub mod modules;
