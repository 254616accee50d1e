//! CPU priority of the calling thread: background work (a server's writer thread: coding
//! inserts, merges) yields the cores to queries under load.

/// Sets the nice value of the calling thread only (Linux: `setpriority` on its thread id;
/// other threads of the process keep theirs) to `nice`, clamped to 0..=19 (19 = lowest
/// priority); 0 leaves it as it is. Going below the thread's current value needs privileges
/// (`EACCES`): the caller decides whether that matters.
pub fn lower_current_thread_priority(nice: i32) -> std::io::Result<()> {
    let nice = nice.clamp(0, 19);
    if nice == 0 {
        return Ok(());
    }
    // SAFETY: `gettid` takes no arguments and cannot fail; `setpriority` with `PRIO_PROCESS`
    // and a thread id changes that thread's nice value and touches no memory of ours.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    match rc {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value of the calling thread, read back with `getpriority`.
    fn current_nice() -> i32 {
        // SAFETY: as above; `getpriority` reads a value and touches no memory of ours.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn lowers_only_the_calling_thread() {
        let before = current_nice();
        let seen = std::thread::spawn(move || {
            lower_current_thread_priority(before + 5).unwrap();
            current_nice()
        })
        .join()
        .unwrap();
        assert_eq!(seen, (before + 5).min(19));
        assert_eq!(current_nice(), before, "another thread's priority changed");
    }
}
