//! Hand-written classic BPF for the few programs seccompiler cannot express (the architecture
//! and x32 check, the bind(2) notification): the instructions and the offsets of
//! `struct seccomp_data` they read.

use seccompiler::sock_filter;

/// `seccomp_data.nr`.
pub(crate) const NR_OFFSET: u32 = 0;
/// `seccomp_data.arch`.
pub(crate) const ARCH_OFFSET: u32 = 4;
pub(crate) const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// Set in the number of an x32 call, which carries x86-64's architecture.
pub(crate) const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Loads the word of `seccomp_data` at `offset` into the accumulator.
pub(crate) fn load(offset: u32) -> sock_filter {
    sock_filter {
        code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        jt: 0,
        jf: 0,
        k: offset,
    }
}

/// Compares the accumulator with `k` (`op`: BPF_JEQ, BPF_JGE, ...) and skips `jt` or `jf`
/// instructions.
pub(crate) fn jump(op: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: (libc::BPF_JMP | op | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

/// Returns the action `k`.
pub(crate) fn ret(k: u32) -> sock_filter {
    sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k,
    }
}
