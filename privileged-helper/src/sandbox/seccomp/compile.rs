//! A [`SyscallFilter`] compiled, with seccompiler, into the classic BPF programs the kernel
//! runs on every syscall of the service.
//!
//! seccompiler gives one program one action on a match and one otherwise, while systemd puts
//! several actions in one filter (the unit's errno or a kill, EPERM for the argument checks,
//! EAFNOSUPPORT for a refused address family, ENOSYS where libc must fall back). So a filter is
//! a short list of programs, each with one action, installed in order; the kernel runs them
//! all and takes the strictest result (a kill over an errno). The syscall list goes last, as
//! installing the others needs `prctl` and `seccomp`, which it may refuse; a call the ENOSYS
//! program refuses (`clone3`, `openat2`) is left to it alone, so that it says ENOSYS and libc
//! falls back to the older call the other programs check, whatever the list says.
//!
//! Every program admits only native (x86-64) syscalls: an i386 `int 0x80` or an x32 call
//! (`nr | 0x40000000`) would reach the kernel under other numbers than the ones filtered, so
//! it kills the process, as `SystemCallArchitectures=native` does.

use std::collections::{BTreeMap, BTreeSet};

use berth_protocol::sandbox::{AddressFamilies, SyscallFilter};
use berth_protocol::syscall_groups;
use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

use super::bpf::{self, ARCH_OFFSET, AUDIT_ARCH_X86_64, NR_OFFSET, X32_SYSCALL_BIT};
use super::table;

/// Syscalls the start itself needs once main has installed the filter: the execve of the
/// service, and the exit if that fails. Never refused, whatever the filter says (a unit cannot
/// usefully deny its own start).
const START_SYSCALLS: &[&str] = &["execve", "exit", "exit_group"];

/// The names SystemCallArchitectures= may give for this helper's one architecture.
const NATIVE_ARCHITECTURES: &[&str] = &["native", "x86-64"];

/// The kernel's bound on all programs of one process together: each counts its length plus 4
/// (`MAX_INSNS_PER_PATH` in kernel/seccomp.c).
const MAX_TOTAL_INSTRUCTIONS: usize = 32768;

/// Largest errno a seccomp `SECCOMP_RET_ERRNO` may return (`MAX_ERRNO`).
const MAX_ERRNO: i32 = 4095;

/// The programs of one [`SyscallFilter`], in installation order; empty when the filter asks
/// for nothing at all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CompiledFilter {
    programs: Vec<BpfProgram>,
}

impl CompiledFilter {
    pub fn programs(&self) -> &[BpfProgram] {
        &self.programs
    }

    pub fn is_empty(&self) -> bool {
        self.programs.is_empty()
    }

    /// Each program as the kernel reads it (`struct sock_filter` after `struct sock_filter`),
    /// for a tool that takes precompiled filters (bwrap's `--add-seccomp-fd`).
    pub fn program_bytes(&self) -> Vec<Vec<u8>> {
        self.programs
            .iter()
            .map(|program| {
                program
                    .iter()
                    .flat_map(|insn| {
                        let mut bytes = Vec::with_capacity(8);
                        bytes.extend(insn.code.to_ne_bytes());
                        bytes.extend([insn.jt, insn.jf]);
                        bytes.extend(insn.k.to_ne_bytes());
                        bytes
                    })
                    .collect()
            })
            .collect()
    }

    /// What the programs count against the kernel's per-process bound.
    pub fn instructions(&self) -> usize {
        self.programs.iter().map(|p| p.len() + 4).sum()
    }
}

/// Why a filter cannot be compiled; each names what in the filter is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("unknown syscall {name:?}")]
    UnknownSyscall { name: String },
    #[error("unknown address family {name:?}")]
    UnknownAddressFamily { name: String },
    #[error("unknown namespace kind {name:?} (known: {})", namespace_names())]
    UnknownNamespace { name: String },
    #[error(
        "architecture {name:?}: this berth-helper filters native (x86-64) syscalls only, and \
         refuses every other architecture's"
    )]
    ForeignArchitecture { name: String },
    #[error("error number {errno} is not between 1 and {MAX_ERRNO}")]
    ErrorNumber { errno: i32 },
    #[error("cannot build the {part} program: {reason}")]
    Build { part: &'static str, reason: String },
    #[error(
        "the filter needs {instructions} BPF instructions, more than the kernel's \
         {MAX_TOTAL_INSTRUCTIONS}"
    )]
    TooLarge { instructions: usize },
}

fn namespace_names() -> String {
    table::NAMESPACES
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Compiles `filter`; every name must be known (a known name x86-64 lacks is skipped, as
/// systemd skips names of other architectures).
pub fn compile(filter: &SyscallFilter) -> Result<CompiledFilter, CompileError> {
    check_names(filter)?;
    if !asks_anything(filter) {
        return Ok(CompiledFilter::default());
    }
    let enosys = enosys_syscalls(filter);
    let mut programs = vec![native_only()];
    programs.extend(address_family_program(filter.address_families.as_ref())?);
    programs.extend(argument_program(filter)?);
    programs.extend(enosys_program(&enosys)?);
    programs.extend(list_program(filter, &enosys)?);
    let compiled = CompiledFilter { programs };
    let instructions = compiled.instructions();
    if instructions > MAX_TOTAL_INSTRUCTIONS {
        return Err(CompileError::TooLarge { instructions });
    }
    Ok(compiled)
}

/// Whether `filter` restricts anything (the baseline's does not: no program at all).
fn asks_anything(filter: &SyscallFilter) -> bool {
    filter.allow.is_some()
        || !filter.deny.is_empty()
        || !filter.architectures.is_empty()
        || filter.address_families.is_some()
        || filter.namespaces_allowed.is_some()
        || filter.restrict_realtime
        || filter.restrict_suid_sgid
        || filter.lock_personality
        || filter.memory_deny_write_execute
}

/// Refuses every name this helper does not know, before anything is built.
pub(crate) fn check_names(filter: &SyscallFilter) -> Result<(), CompileError> {
    let syscalls = filter.allow.iter().flatten().chain(&filter.deny);
    // Known to systemd 252, or a newer call x86-64 has.
    if let Some(name) = syscalls
        .into_iter()
        .find(|name| !syscall_groups::is_known(name) && table::syscall_number(name).is_none())
    {
        return Err(CompileError::UnknownSyscall { name: name.clone() });
    }
    if let Some(name) = filter
        .architectures
        .iter()
        .find(|name| !NATIVE_ARCHITECTURES.contains(&name.as_str()))
    {
        return Err(CompileError::ForeignArchitecture { name: name.clone() });
    }
    if let Some(errno) = filter.error_number
        && !(1..=MAX_ERRNO).contains(&errno)
    {
        return Err(CompileError::ErrorNumber { errno });
    }
    if let Some(families) = &filter.address_families
        && let Some(name) = families
            .families
            .iter()
            .find(|name| table::address_family(name).is_none())
    {
        return Err(CompileError::UnknownAddressFamily { name: name.clone() });
    }
    if let Some(name) = filter
        .namespaces_allowed
        .iter()
        .flatten()
        .find(|name| table::namespace_flag(name).is_none())
    {
        return Err(CompileError::UnknownNamespace { name: name.clone() });
    }
    Ok(())
}

/// The architecture and x32 check, written out because seccompiler's programs check only the
/// architecture, and an x32 call carries x86-64's.
fn native_only() -> BpfProgram {
    vec![
        bpf::load(ARCH_OFFSET),
        // Not x86-64 (i386's int 0x80): to the kill at the end.
        bpf::jump(libc::BPF_JEQ, AUDIT_ARCH_X86_64, 0, 3),
        bpf::load(NR_OFFSET),
        // An x32 number: to the kill.
        bpf::jump(libc::BPF_JGE, X32_SYSCALL_BIT, 1, 0),
        bpf::ret(libc::SECCOMP_RET_ALLOW),
        bpf::ret(libc::SECCOMP_RET_KILL_PROCESS),
    ]
}

/// SystemCallFilter=: the allow list (less the deny list) or the deny list alone, refused with
/// SystemCallErrorNumber= or a kill.
fn list_program(
    filter: &SyscallFilter,
    enosys: &BTreeSet<i64>,
) -> Result<Option<BpfProgram>, CompileError> {
    let refused = match filter.error_number {
        Some(errno) => SeccompAction::Errno(errno.unsigned_abs()),
        None => SeccompAction::KillProcess,
    };
    let deny = numbers(&filter.deny);
    // Let through here: the start's own calls, and those the ENOSYS program answers.
    let mut passed = numbers(START_SYSCALLS);
    passed.extend(enosys);
    let (listed, mismatch, matched) = match &filter.allow {
        Some(allow) => {
            let mut allowed = numbers(allow);
            allowed.retain(|nr| !deny.contains(nr));
            allowed.extend(&passed);
            (allowed, refused, SeccompAction::Allow)
        }
        None => {
            let denied: BTreeSet<i64> = deny.difference(&passed).copied().collect();
            if denied.is_empty() {
                return Ok(None);
            }
            (denied, SeccompAction::Allow, refused)
        }
    };
    let rules = listed.into_iter().map(|nr| (nr, Vec::new())).collect();
    build("syscall list", rules, mismatch, matched).map(Some)
}

/// The x86-64 numbers of `names`; names without one are skipped.
fn numbers(names: &[impl AsRef<str>]) -> BTreeSet<i64> {
    names
        .iter()
        .filter_map(|name| table::syscall_number(name.as_ref()))
        .map(i64::from)
        .collect()
}

/// RestrictAddressFamilies=: socket() and socketpair() fail with EAFNOSUPPORT for a family
/// not allowed.
fn address_family_program(
    families: Option<&AddressFamilies>,
) -> Result<Option<BpfProgram>, CompileError> {
    let Some(families) = families else {
        return Ok(None);
    };
    let numbers: BTreeSet<u32> = families
        .families
        .iter()
        .filter_map(|name| table::address_family(name))
        .collect();
    let rules = if families.allow_list {
        if numbers.is_empty() {
            // No family at all: every socket() fails.
            Vec::new()
        } else {
            // One rule: a family that is none of the allowed ones.
            let conditions = numbers
                .iter()
                .map(|af| condition(0, SeccompCmpOp::Ne, u64::from(*af)))
                .collect::<Result<_, _>>()?;
            vec![rule(conditions)?]
        }
    } else if numbers.is_empty() {
        return Ok(None);
    } else {
        numbers
            .iter()
            .map(|af| rule(vec![condition(0, SeccompCmpOp::Eq, u64::from(*af))?]))
            .collect::<Result<_, _>>()?
    };
    let mut map = BTreeMap::new();
    map.insert(libc::SYS_socket, rules.clone());
    map.insert(libc::SYS_socketpair, rules);
    build(
        "address family",
        map,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EAFNOSUPPORT as u32),
    )
    .map(Some)
}

/// RestrictNamespaces=, RestrictRealtime=, RestrictSUIDSGID=, LockPersonality= and
/// MemoryDenyWriteExecute=: argument checks failing with EPERM.
fn argument_program(filter: &SyscallFilter) -> Result<Option<BpfProgram>, CompileError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    if let Some(allowed) = &filter.namespaces_allowed {
        namespace_rules(allowed, &mut rules)?;
    }
    if filter.restrict_realtime {
        realtime_rules(&mut rules)?;
    }
    if filter.restrict_suid_sgid {
        suid_sgid_rules(&mut rules)?;
    }
    if filter.lock_personality {
        // Only PER_LINUX (what every service starts with) and the query 0xffffffff.
        let other = rule(vec![
            condition(0, SeccompCmpOp::Ne, 0)?,
            condition(0, SeccompCmpOp::Ne, 0xffff_ffff)?,
        ])?;
        rules.entry(libc::SYS_personality).or_default().push(other);
    }
    if filter.memory_deny_write_execute {
        memory_rules(&mut rules)?;
    }
    if rules.is_empty() {
        return Ok(None);
    }
    build(
        "argument",
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
    )
    .map(Some)
}

/// A new namespace of a kind not allowed, by unshare(), clone() or setns(), fails with EPERM
/// (clone3() is in [`enosys_program`]).
fn namespace_rules(
    allowed: &[String],
    rules: &mut BTreeMap<i64, Vec<SeccompRule>>,
) -> Result<(), CompileError> {
    let allowed: Vec<u32> = allowed
        .iter()
        .filter_map(|name| table::namespace_flag(name))
        .collect();
    let forbidden: Vec<u32> = table::NAMESPACES
        .iter()
        .map(|(_, flag)| *flag)
        .filter(|flag| !allowed.contains(flag))
        .collect();
    if forbidden.is_empty() {
        return Ok(());
    }
    for flag in &forbidden {
        let flag = u64::from(*flag);
        rules
            .entry(libc::SYS_unshare)
            .or_default()
            .push(rule(vec![masked(0, flag)?])?);
        // In clone()'s flags, 0x80 (CLONE_NEWTIME's bit) is part of the exit signal: clone()
        // cannot make a time namespace.
        if flag != libc::CLONE_NEWTIME as u64 {
            rules
                .entry(libc::SYS_clone)
                .or_default()
                .push(rule(vec![masked(0, flag)?])?);
        }
    }
    if allowed.is_empty() {
        // Joining any namespace at all is refused.
        rules.insert(libc::SYS_setns, Vec::new());
    } else {
        let setns = rules.entry(libc::SYS_setns).or_default();
        for flag in &forbidden {
            setns.push(rule(vec![masked(1, u64::from(*flag))?])?);
        }
        // nstype 0 joins whatever kind the descriptor is: it could be a forbidden one.
        setns.push(rule(vec![condition(1, SeccompCmpOp::Eq, 0)?])?);
    }
    Ok(())
}

/// sched_setscheduler() to a real-time policy (SCHED_FIFO, SCHED_RR) or to anything above
/// SCHED_IDLE (SCHED_DEADLINE, or any policy or'ed with SCHED_RESET_ON_FORK) fails.
fn realtime_rules(rules: &mut BTreeMap<i64, Vec<SeccompRule>>) -> Result<(), CompileError> {
    let set = rules.entry(libc::SYS_sched_setscheduler).or_default();
    set.push(rule(vec![condition(
        1,
        SeccompCmpOp::Eq,
        libc::SCHED_FIFO as u64,
    )?])?);
    set.push(rule(vec![condition(
        1,
        SeccompCmpOp::Eq,
        libc::SCHED_RR as u64,
    )?])?);
    set.push(rule(vec![condition(
        1,
        SeccompCmpOp::Gt,
        libc::SCHED_IDLE as u64,
    )?])?);
    Ok(())
}

/// A mode with S_ISUID or S_ISGID, given to chmod() and its kind, mkdir(), mknod() or a
/// creating open(), fails (openat2() is in [`enosys_program`]: its mode is behind a pointer).
fn suid_sgid_rules(rules: &mut BTreeMap<i64, Vec<SeccompRule>>) -> Result<(), CompileError> {
    // (syscall, index of its mode argument)
    let mode_at = [
        (libc::SYS_chmod, 1),
        (libc::SYS_fchmod, 1),
        (libc::SYS_fchmodat, 2),
        (libc::SYS_fchmodat2, 2),
        (libc::SYS_mkdir, 1),
        (libc::SYS_mkdirat, 2),
        (libc::SYS_mknod, 1),
        (libc::SYS_mknodat, 2),
        (libc::SYS_creat, 1),
    ];
    // (syscall, index of its flags, index of its mode)
    let creating = [(libc::SYS_open, 1, 2), (libc::SYS_openat, 2, 3)];
    // O_TMPFILE without O_DIRECTORY: a file created like O_CREAT makes one.
    const O_TMPFILE_BIT: u64 = 0o20000000;
    for bit in [libc::S_ISUID as u64, libc::S_ISGID as u64] {
        for (nr, mode) in mode_at {
            rules
                .entry(nr)
                .or_default()
                .push(rule(vec![masked(mode, bit)?])?);
        }
        for (nr, flags, mode) in creating {
            for create in [libc::O_CREAT as u64, O_TMPFILE_BIT] {
                rules
                    .entry(nr)
                    .or_default()
                    .push(rule(vec![masked(flags, create)?, masked(mode, bit)?])?);
            }
        }
    }
    Ok(())
}

/// Memory both writable and executable, or made executable later, is refused: mmap() with
/// PROT_WRITE|PROT_EXEC, mprotect() and pkey_mprotect() adding PROT_EXEC, shmat() with
/// SHM_EXEC.
fn memory_rules(rules: &mut BTreeMap<i64, Vec<SeccompRule>>) -> Result<(), CompileError> {
    let write_exec = (libc::PROT_WRITE | libc::PROT_EXEC) as u64;
    rules
        .entry(libc::SYS_mmap)
        .or_default()
        .push(rule(vec![masked(2, write_exec)?])?);
    for nr in [libc::SYS_mprotect, libc::SYS_pkey_mprotect] {
        rules
            .entry(nr)
            .or_default()
            .push(rule(vec![masked(2, libc::PROT_EXEC as u64)?])?);
    }
    rules
        .entry(libc::SYS_shmat)
        .or_default()
        .push(rule(vec![masked(2, libc::SHM_EXEC as u64)?])?);
    Ok(())
}

/// Calls that fail with ENOSYS, so that libc falls back to the older call the other programs
/// check: those whose arguments sit behind a pointer, where an argument check applies
/// (clone3() under RestrictNamespaces=, openat2() under RestrictSUIDSGID=), and clone3()
/// wherever the list refuses it (glibc's fork and threads try clone3() first and take only
/// ENOSYS as "use clone()").
fn enosys_syscalls(filter: &SyscallFilter) -> BTreeSet<i64> {
    let mut calls = BTreeSet::new();
    let namespaces_restricted = filter.namespaces_allowed.as_ref().is_some_and(|allowed| {
        table::NAMESPACES
            .iter()
            .any(|(name, _)| !allowed.iter().any(|a| a == name))
    });
    let clone3_listed = |list: &[String]| list.iter().any(|name| name == "clone3");
    let list_refuses_clone3 = match &filter.allow {
        Some(allow) => !clone3_listed(allow) || clone3_listed(&filter.deny),
        None => clone3_listed(&filter.deny),
    };
    if namespaces_restricted || list_refuses_clone3 {
        calls.insert(libc::SYS_clone3);
    }
    if filter.restrict_suid_sgid {
        calls.insert(libc::SYS_openat2);
    }
    calls
}

fn enosys_program(calls: &BTreeSet<i64>) -> Result<Option<BpfProgram>, CompileError> {
    if calls.is_empty() {
        return Ok(None);
    }
    let rules = calls.iter().map(|nr| (*nr, Vec::new())).collect();
    build(
        "ENOSYS",
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
    )
    .map(Some)
}

fn build(
    part: &'static str,
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, CompileError> {
    let error = |e: BackendError| CompileError::Build {
        part,
        reason: e.to_string(),
    };
    let filter = SeccompFilter::new(rules, mismatch, matched, TargetArch::x86_64).map_err(error)?;
    BpfProgram::try_from(filter).map_err(error)
}

/// Argument `arg` (its low 32 bits: every checked argument is an int or flags that fit)
/// compared with `value`.
fn condition(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, CompileError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(|e| {
        CompileError::Build {
            part: "argument",
            reason: e.to_string(),
        }
    })
}

/// Argument `arg` has every bit of `bits` set.
fn masked(arg: u8, bits: u64) -> Result<SeccompCondition, CompileError> {
    condition(arg, SeccompCmpOp::MaskedEq(bits), bits)
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, CompileError> {
    SeccompRule::new(conditions).map_err(|e| CompileError::Build {
        part: "argument",
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    //! Each filter is installed for real, in a forked child, which then tries syscalls: what
    //! the kernel answers is what a service would see. Installing a filter needs no root (the
    //! child sets no_new_privs), only x86-64.

    use std::ffi::CString;
    use std::os::fd::AsRawFd;

    use berth_protocol::sandbox::SandboxSpec;

    use super::*;

    /// How a child that tried a syscall under a filter ended.
    #[derive(Debug, PartialEq, Eq)]
    enum Outcome {
        /// The call returned: 0 for success, else its errno.
        Returned(i32),
        /// The filter killed it with this signal.
        Killed(i32),
    }

    use Outcome::{Killed, Returned};

    fn no_filter() -> SyscallFilter {
        SandboxSpec::baseline(61200, 61200, "test").syscalls
    }

    /// Forks; the child installs `filter`, runs `attempt` (a raw syscall's return value) and
    /// exits with its errno. The child only makes syscalls: no allocation after the fork.
    fn under(filter: &CompiledFilter, attempt: impl Fn() -> i64) -> Outcome {
        // SAFETY: the child calls only async-signal-safe functions (seccomp, raw syscalls,
        // _exit), so the other threads of the test harness do not matter.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            if install(filter).is_err() {
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(200) };
            }
            let ret = attempt();
            let code = if ret < 0 { errno() } else { 0 };
            // SAFETY: as above.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above; `status` is a valid out pointer.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid);
        if libc::WIFSIGNALED(status) {
            Killed(libc::WTERMSIG(status))
        } else {
            let code = libc::WEXITSTATUS(status);
            assert_ne!(code, 200, "the filter could not be installed");
            Returned(code)
        }
    }

    fn install(filter: &CompiledFilter) -> std::io::Result<()> {
        super::super::install(filter)
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    fn syscall(nr: i64, args: [u64; 4]) -> i64 {
        syscall6(nr, [args[0], args[1], args[2], args[3], 0, 0])
    }

    fn syscall6(nr: i64, args: [u64; 6]) -> i64 {
        // SAFETY: the calls the tests make take integers, or pointers prepared before the fork
        // (or invalid ones, which the kernel reports as EFAULT).
        unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) }
    }

    /// A deny list of `list`, refused with `errno` (or a kill).
    fn denying(list: &[&str], errno: Option<i32>) -> SyscallFilter {
        let mut filter = no_filter();
        filter.deny = names(list);
        filter.error_number = errno;
        filter
    }

    fn compiled(filter: &SyscallFilter) -> CompiledFilter {
        compile(filter).unwrap()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    const KEYCTL_GET_KEYRING_ID: u64 = 0;
    const KEY_SPEC_SESSION_KEYRING: i64 = -3;

    fn keyctl() -> i64 {
        syscall(
            libc::SYS_keyctl,
            [KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING as u64, 0, 0],
        )
    }

    fn getpid() -> i64 {
        syscall(libc::SYS_getpid, [0; 4])
    }

    /// clone3 with a null argument: EFAULT if it reaches the kernel.
    fn clone3() -> i64 {
        syscall(libc::SYS_clone3, [0, 64, 0, 0])
    }

    #[test]
    fn a_denied_syscall_fails_with_the_error_number() {
        let filter = denying(&["keyctl"], Some(libc::EPERM));
        let filter = compiled(&filter);

        assert_eq!(under(&filter, keyctl), Returned(libc::EPERM));
        assert_eq!(under(&filter, getpid), Returned(0));
    }

    #[test]
    fn a_denied_syscall_kills_without_an_error_number() {
        let filter = compiled(&denying(&["keyctl"], None));

        assert_eq!(under(&filter, keyctl), Killed(libc::SIGSYS));
    }

    #[test]
    fn an_allow_list_refuses_everything_else() {
        let mut filter = no_filter();
        let mut allow: Vec<String> = berth_protocol::syscall_groups::expand("@system-service")
            .unwrap()
            .into_iter()
            .map(str::to_owned)
            .collect();
        allow.retain(|name| name != "keyctl");
        filter.allow = Some(allow);
        filter.error_number = Some(libc::EACCES);
        let filter = compiled(&filter);

        assert_eq!(under(&filter, keyctl), Returned(libc::EACCES));
        assert_eq!(
            under(&filter, || syscall(libc::SYS_io_uring_setup, [0; 4])),
            Returned(libc::EFAULT),
            "io_uring_setup is in @system-service (@aio)"
        );
        assert_eq!(under(&filter, getpid), Returned(0));
    }

    #[test]
    fn deny_wins_over_allow() {
        let mut filter = no_filter();
        filter.allow = Some(names(&["getpid", "keyctl", "exit_group"]));
        filter.deny = names(&["keyctl"]);
        filter.error_number = Some(libc::EPERM);
        let filter = compiled(&filter);

        assert_eq!(under(&filter, keyctl), Returned(libc::EPERM));
        assert_eq!(under(&filter, getpid), Returned(0));
    }

    #[test]
    fn execve_stays_allowed_whatever_the_filter_denies() {
        let filter = denying(&["execve", "exit_group"], Some(libc::EPERM));
        let filter = compiled(&filter);
        let path = CString::new("/bin/true").unwrap();
        let argv = [path.as_ptr(), std::ptr::null()];
        let env = [std::ptr::null::<libc::c_char>()];

        let outcome = under(&filter, || {
            syscall(
                libc::SYS_execve,
                [
                    path.as_ptr() as u64,
                    argv.as_ptr() as u64,
                    env.as_ptr() as u64,
                    0,
                ],
            )
        });

        assert_eq!(outcome, Returned(0), "/bin/true ran and exited 0");
    }

    #[test]
    fn x32_syscalls_kill_the_process() {
        let mut filter = no_filter();
        filter.architectures = names(&["native"]);
        let filter = compiled(&filter);

        assert_eq!(
            under(&filter, || syscall(
                libc::SYS_getpid | i64::from(X32_SYSCALL_BIT),
                [0; 4]
            )),
            Killed(libc::SIGSYS)
        );
        assert_eq!(under(&filter, getpid), Returned(0));
    }

    /// getpid through the i386 entry point (its number there is 20).
    fn int80_getpid() -> i64 {
        let ret: i64;
        // SAFETY: a syscall through the 32-bit entry; it takes no argument and clobbers only
        // rax (r8-r11 are saved by the kernel on this path).
        unsafe {
            std::arch::asm!("int 0x80", inlateout("rax") 20i64 => ret, options(nostack));
        }
        if ret < 0 {
            // SAFETY: errno is per thread; report the raw return as errno.
            unsafe { *libc::__errno_location() = (-ret) as i32 };
            return -1;
        }
        ret
    }

    #[test]
    fn i386_syscalls_kill_the_process() {
        let mut filter = no_filter();
        filter.architectures = names(&["native"]);
        let filter = compiled(&filter);

        assert_eq!(under(&filter, int80_getpid), Killed(libc::SIGSYS));
    }

    #[test]
    fn i386_syscalls_work_without_a_filter() {
        // The control for the test above: the kernel has the 32-bit entry at all.
        assert_eq!(under(&CompiledFilter::default(), int80_getpid), Returned(0));
    }

    #[test]
    fn foreign_architectures_are_refused() {
        let mut filter = no_filter();
        filter.architectures = names(&["native", "x86"]);

        assert_eq!(
            compile(&filter),
            Err(CompileError::ForeignArchitecture { name: "x86".into() })
        );
    }

    #[test]
    fn nothing_asked_installs_nothing() {
        assert!(compiled(&no_filter()).is_empty());
    }

    #[test]
    fn unknown_names_are_refused() {
        let mut filter = no_filter();
        filter.deny = names(&["keyctl", "not_a_syscall"]);

        assert_eq!(
            compile(&filter),
            Err(CompileError::UnknownSyscall {
                name: "not_a_syscall".into()
            })
        );
    }

    #[test]
    fn a_syscall_newer_than_systemd_252_can_be_denied() {
        let filter = denying(&["cachestat"], Some(libc::EPERM));

        assert_eq!(
            under(&compiled(&filter), || syscall(451, [u64::MAX, 0, 0, 0])),
            Returned(libc::EPERM)
        );
    }

    #[test]
    fn clone3_says_enosys_where_the_allow_list_leaves_it_out() {
        let mut filter = no_filter();
        filter.allow = Some(names(&["getpid"]));

        // Not killed, though the list kills what it refuses.
        assert_eq!(under(&compiled(&filter), clone3), Returned(libc::ENOSYS));
    }

    #[test]
    fn names_of_other_architectures_are_skipped() {
        let filter = denying(&["getuid32", "keyctl"], Some(libc::EPERM));

        assert_eq!(under(&compiled(&filter), keyctl), Returned(libc::EPERM));
    }

    #[test]
    fn error_number_zero_is_refused() {
        let mut filter = no_filter();
        filter.deny = names(&["keyctl"]);
        filter.error_number = Some(0);

        assert_eq!(
            compile(&filter),
            Err(CompileError::ErrorNumber { errno: 0 })
        );
    }

    fn unshare(flags: i32) -> impl Fn() -> i64 {
        move || syscall(libc::SYS_unshare, [flags as u64, 0, 0, 0])
    }

    #[test]
    fn restrict_namespaces_refuses_new_namespaces() {
        let mut filter = no_filter();
        filter.namespaces_allowed = Some(Vec::new());
        let filter = compiled(&filter);

        assert_eq!(
            under(&filter, unshare(libc::CLONE_NEWUSER)),
            Returned(libc::EPERM)
        );
        assert_eq!(
            under(&filter, unshare(libc::CLONE_NEWNET | libc::CLONE_FS)),
            Returned(libc::EPERM)
        );
        assert_eq!(
            under(&filter, || syscall(libc::SYS_setns, [0, 0, 0, 0])),
            Returned(libc::EPERM)
        );
        // Flags that make no namespace still work.
        assert_eq!(under(&filter, unshare(libc::CLONE_FS)), Returned(0));
    }

    #[test]
    fn restrict_namespaces_keeps_the_allowed_kinds() {
        let mut filter = no_filter();
        filter.namespaces_allowed = Some(names(&["user"]));
        let filter = compiled(&filter);

        assert_eq!(
            under(&filter, unshare(libc::CLONE_NEWNET)),
            Returned(libc::EPERM)
        );
        assert_eq!(under(&filter, unshare(libc::CLONE_NEWUSER)), Returned(0));
        // setns with a bad descriptor reaches the kernel (EBADF) for an allowed kind only.
        assert_eq!(
            under(&filter, || syscall(
                libc::SYS_setns,
                [u64::MAX, libc::CLONE_NEWUSER as u64, 0, 0]
            )),
            Returned(libc::EBADF)
        );
        assert_eq!(
            under(&filter, || syscall(
                libc::SYS_setns,
                [u64::MAX, libc::CLONE_NEWNET as u64, 0, 0]
            )),
            Returned(libc::EPERM)
        );
    }

    #[test]
    fn clone3_says_enosys_under_restrict_namespaces() {
        let mut filter = no_filter();
        filter.namespaces_allowed = Some(Vec::new());

        assert_eq!(under(&compiled(&filter), clone3), Returned(libc::ENOSYS));
    }

    #[test]
    fn clone3_says_enosys_even_where_the_allow_list_refuses_it() {
        let mut filter = no_filter();
        filter.allow = Some(names(&["getpid"]));
        filter.error_number = Some(libc::EPERM);
        filter.namespaces_allowed = Some(Vec::new());

        assert_eq!(under(&compiled(&filter), clone3), Returned(libc::ENOSYS));
    }

    fn socket(family: i32) -> impl Fn() -> i64 {
        move || {
            syscall(
                libc::SYS_socket,
                [family as u64, libc::SOCK_DGRAM as u64, 0, 0],
            )
        }
    }

    #[test]
    fn an_address_family_allow_list_refuses_the_others() {
        let mut filter = no_filter();
        filter.address_families = Some(AddressFamilies {
            allow_list: true,
            families: names(&["AF_UNIX", "AF_INET", "AF_INET6"]),
        });
        let filter = compiled(&filter);

        assert_eq!(
            under(&filter, socket(libc::AF_NETLINK)),
            Returned(libc::EAFNOSUPPORT)
        );
        assert_eq!(
            under(&filter, socket(libc::AF_PACKET)),
            Returned(libc::EAFNOSUPPORT)
        );
        assert_eq!(under(&filter, socket(libc::AF_UNIX)), Returned(0));
        assert_eq!(under(&filter, socket(libc::AF_INET)), Returned(0));
    }

    #[test]
    fn an_empty_address_family_allow_list_refuses_every_socket() {
        let mut filter = no_filter();
        filter.address_families = Some(AddressFamilies {
            allow_list: true,
            families: Vec::new(),
        });

        assert_eq!(
            under(&compiled(&filter), socket(libc::AF_UNIX)),
            Returned(libc::EAFNOSUPPORT)
        );
    }

    #[test]
    fn an_address_family_deny_list_refuses_only_those() {
        let mut filter = no_filter();
        filter.address_families = Some(AddressFamilies {
            allow_list: false,
            families: names(&["AF_PACKET"]),
        });
        let filter = compiled(&filter);

        assert_eq!(
            under(&filter, socket(libc::AF_PACKET)),
            Returned(libc::EAFNOSUPPORT)
        );
        assert_eq!(under(&filter, socket(libc::AF_UNIX)), Returned(0));
        assert_eq!(
            under(&filter, || syscall(
                libc::SYS_socketpair,
                [libc::AF_PACKET as u64, libc::SOCK_DGRAM as u64, 0, 0]
            )),
            Returned(libc::EAFNOSUPPORT)
        );
    }

    fn set_scheduler(policy: i32) -> impl Fn() -> i64 {
        let param = libc::sched_param {
            sched_priority: if policy == libc::SCHED_OTHER { 0 } else { 1 },
        };
        move || {
            syscall(
                libc::SYS_sched_setscheduler,
                [0, policy as u64, &param as *const _ as u64, 0],
            )
        }
    }

    #[test]
    fn restrict_realtime_refuses_realtime_policies() {
        let mut filter = no_filter();
        filter.restrict_realtime = true;
        let filter = compiled(&filter);

        assert_eq!(
            under(&filter, set_scheduler(libc::SCHED_FIFO)),
            Returned(libc::EPERM)
        );
        assert_eq!(
            under(&filter, set_scheduler(libc::SCHED_RR)),
            Returned(libc::EPERM)
        );
        assert_eq!(
            under(&filter, set_scheduler(libc::SCHED_OTHER)),
            Returned(0)
        );
    }

    #[test]
    fn restrict_suid_sgid_refuses_setuid_and_setgid_modes() {
        let mut filter = no_filter();
        filter.restrict_suid_sgid = true;
        let filter = compiled(&filter);
        let file = tempfile::tempfile().unwrap();
        let fd = file.as_raw_fd() as u64;
        let dir = tempfile::tempdir().unwrap();
        let created = CString::new(dir.path().join("new").to_str().unwrap()).unwrap();

        let fchmod = |mode: u32| move || syscall(libc::SYS_fchmod, [fd, u64::from(mode), 0, 0]);
        assert_eq!(under(&filter, fchmod(0o4755)), Returned(libc::EPERM));
        assert_eq!(under(&filter, fchmod(0o2755)), Returned(libc::EPERM));
        assert_eq!(under(&filter, fchmod(0o755)), Returned(0));
        let create = |mode: u32| {
            let path = created.as_ptr() as u64;
            move || {
                syscall(
                    libc::SYS_openat,
                    [
                        libc::AT_FDCWD as u64,
                        path,
                        (libc::O_CREAT | libc::O_WRONLY) as u64,
                        u64::from(mode),
                    ],
                )
            }
        };
        assert_eq!(under(&filter, create(0o4644)), Returned(libc::EPERM));
        assert_eq!(under(&filter, create(0o644)), Returned(0));
    }

    #[test]
    fn openat2_says_enosys_under_restrict_suid_sgid() {
        let mut filter = no_filter();
        filter.restrict_suid_sgid = true;

        assert_eq!(
            under(&compiled(&filter), || syscall(
                libc::SYS_openat2,
                [0, 0, 0, 0]
            )),
            Returned(libc::ENOSYS)
        );
    }

    const READ_IMPLIES_EXEC: u64 = 0x0040_0000;

    #[test]
    fn lock_personality_refuses_a_new_personality() {
        let mut filter = no_filter();
        filter.lock_personality = true;
        let filter = compiled(&filter);

        assert_eq!(
            under(&filter, || syscall(
                libc::SYS_personality,
                [READ_IMPLIES_EXEC, 0, 0, 0]
            )),
            Returned(libc::EPERM)
        );
        // Asking for the current one (0xffffffff) and PER_LINUX still work.
        assert_eq!(
            under(&filter, || syscall(
                libc::SYS_personality,
                [0xffff_ffff, 0, 0, 0]
            )),
            Returned(0)
        );
        assert_eq!(
            under(&filter, || syscall(libc::SYS_personality, [0, 0, 0, 0])),
            Returned(0)
        );
    }

    #[test]
    fn a_new_personality_works_without_the_lock() {
        assert_eq!(
            under(&CompiledFilter::default(), || syscall(
                libc::SYS_personality,
                [READ_IMPLIES_EXEC, 0, 0, 0]
            )),
            Returned(0)
        );
    }

    fn mmap(prot: i32) -> impl Fn() -> i64 {
        move || {
            syscall6(
                libc::SYS_mmap,
                [
                    0,
                    4096,
                    prot as u64,
                    (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                    u64::MAX,
                    0,
                ],
            )
        }
    }

    #[test]
    fn memory_deny_write_execute_refuses_writable_code() {
        let mut filter = no_filter();
        filter.memory_deny_write_execute = true;
        let filter = compiled(&filter);

        assert_eq!(
            under(&filter, mmap(libc::PROT_WRITE | libc::PROT_EXEC)),
            Returned(libc::EPERM)
        );
        assert_eq!(
            under(&filter, mmap(libc::PROT_READ | libc::PROT_EXEC)),
            Returned(0)
        );
        assert_eq!(
            under(&filter, mmap(libc::PROT_READ | libc::PROT_WRITE)),
            Returned(0)
        );
        let mprotect_exec = || {
            let page = mmap(libc::PROT_READ | libc::PROT_WRITE)();
            syscall(
                libc::SYS_mprotect,
                [
                    page as u64,
                    4096,
                    (libc::PROT_READ | libc::PROT_EXEC) as u64,
                    0,
                ],
            )
        };
        assert_eq!(under(&filter, mprotect_exec), Returned(libc::EPERM));
    }

    #[test]
    fn writable_code_works_without_the_directive() {
        assert_eq!(
            under(
                &CompiledFilter::default(),
                mmap(libc::PROT_WRITE | libc::PROT_EXEC)
            ),
            Returned(0)
        );
    }

    #[test]
    fn a_full_default_profile_filter_fits_the_kernel() {
        let mut filter = no_filter();
        filter.allow = Some(
            berth_protocol::syscall_groups::expand("@system-service")
                .unwrap()
                .into_iter()
                .map(str::to_owned)
                .collect(),
        );
        filter.deny = names(&["@privileged", "@resources"])
            .iter()
            .flat_map(|g| berth_protocol::syscall_groups::expand(g).unwrap())
            .map(str::to_owned)
            .collect();
        filter.error_number = Some(libc::EPERM);
        filter.architectures = names(&["native"]);
        filter.address_families = Some(AddressFamilies {
            allow_list: true,
            families: names(&["AF_UNIX", "AF_INET", "AF_INET6"]),
        });
        filter.namespaces_allowed = Some(Vec::new());
        filter.restrict_realtime = true;
        filter.restrict_suid_sgid = true;
        filter.lock_personality = true;
        filter.memory_deny_write_execute = true;

        let compiled = compiled(&filter);

        assert!(compiled.instructions() <= MAX_TOTAL_INSTRUCTIONS);
        assert_eq!(under(&compiled, getpid), Returned(0));
        // In @privileged; without the filter, root would get EINVAL for the missing magic.
        assert_eq!(
            under(&compiled, || syscall(libc::SYS_reboot, [0; 4])),
            Returned(libc::EPERM)
        );
    }

    #[test]
    fn program_bytes_are_the_kernels_layout() {
        let mut filter = no_filter();
        filter.architectures = names(&["native"]);

        let bytes = compiled(&filter).program_bytes();

        assert_eq!(bytes.len(), 1);
        assert_eq!(bytes[0].len(), native_only().len() * 8);
        // The first instruction loads the architecture: BPF_LD|BPF_W|BPF_ABS, k = 4.
        assert_eq!(&bytes[0][..8], &[0x20, 0, 0, 0, 4, 0, 0, 0]);
    }
}
