//! Threads pgops starts inside a Postgres process block every signal, so that Postgres'
//! handlers (which touch backend state) only ever run on the process' main thread.

/// Blocks all signals on the calling thread; threads it starts inherit the mask.
pub fn block_all() {
    // SAFETY: sigset_t is a plain C bit set for which all-zero bytes are a valid value (and
    // sigfillset overwrites it anyway); both calls get pointers to this live local, and
    // pthread_sigmask changes only the calling thread's mask (a null `oldset` is allowed).
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
}
