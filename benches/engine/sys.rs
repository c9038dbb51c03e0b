//! The few system calls the benchmarks need that `std` lacks.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Raises the soft limit on open files to the hard limit and returns the
/// new soft limit. A store of 1,000 partitions holds about 3,000 files open.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call's duration.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` is a valid rlimit read just above; raising the soft
    // limit up to the hard limit needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit.rlim_cur)
}

/// Allocates `len` bytes of `file` from offset 0 on disk (the file reads
/// as zeros), so later writes never need block allocation or hit ENOSPC.
pub fn fallocate(file: &File, len: u64) -> io::Result<()> {
    loop {
        // SAFETY: a system call on a descriptor `file` keeps open; no
        // memory is passed to the kernel.
        let result = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
        if result == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Asks the kernel to drop `file`'s clean pages from the page cache, so the
/// next read comes from the disk. Dirty pages stay; sync the file first.
pub fn drop_cached_pages(file: &File) -> io::Result<()> {
    // SAFETY: a system call on a descriptor `file` keeps open; no memory is
    // passed to the kernel.
    let result = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(result))
    }
}
