//! The firewall as an eBPF program, built as data: one `cgroup_skb` program per direction
//! whose verdict follows systemd's IPAddressAllow=/IPAddressDeny= rule for the packet's
//! remote address (the source of an incoming packet, the destination of an outgoing one):
//! allowed if it is in `allow`, else dropped if it is in `deny`, else allowed.
//!
//! The prefixes are compiled into the program as constants (masked compares), so there is
//! no map to create or fill and the program is the whole policy. Pure: nothing here talks
//! to the kernel (`load.rs` does).

use std::net::IpAddr;

use berth_protocol::ip_prefix::{IpPrefix, mask32};

/// Which packets a program sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Ingress,
    Egress,
}

/// The two lists of one firewall, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Rules {
    pub allow: Vec<IpPrefix>,
    pub deny: Vec<IpPrefix>,
}

impl Rules {
    /// Whether the rules drop anything at all: without a deny list every packet passes.
    pub(crate) fn filters(&self) -> bool {
        !self.deny.is_empty()
    }
}

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    /// The kernel's in-memory layout (little-endian host: x86_64, aarch64).
    pub(crate) fn encode(&self) -> [u8; 8] {
        let off = self.off.to_ne_bytes();
        let imm = self.imm.to_ne_bytes();
        [
            self.code, self.regs, off[0], off[1], imm[0], imm[1], imm[2], imm[3],
        ]
    }
}

// Opcode parts (linux/bpf.h, linux/bpf_common.h).
pub(crate) const LDX_W: u8 = 0x01 | 0x60; // BPF_LDX | BPF_MEM | BPF_W
pub(crate) const ALU64_MOV_X: u8 = 0x07 | 0xb0 | 0x08;
pub(crate) const ALU64_MOV_K: u8 = 0x07 | 0xb0;
pub(crate) const ALU64_ADD_K: u8 = 0x07;
pub(crate) const ALU_MOV_X: u8 = 0x04 | 0xb0 | 0x08;
pub(crate) const ALU_AND_K: u8 = 0x04 | 0x50;
/// BPF_ALU | BPF_END | BPF_TO_BE: to network order, i.e. a byte swap on a little-endian host.
pub(crate) const ALU_TO_BE: u8 = 0x04 | 0xd0 | 0x08;
pub(crate) const JMP_JA: u8 = 0x05;
pub(crate) const JMP_JEQ_K: u8 = 0x05 | 0x10;
pub(crate) const JMP_JNE_K: u8 = 0x05 | 0x50;
pub(crate) const JMP32_JNE_K: u8 = 0x06 | 0x50;
pub(crate) const CALL: u8 = 0x05 | 0x80;
pub(crate) const EXIT: u8 = 0x05 | 0x90;

/// BPF_FUNC_skb_load_bytes(skb, offset, to, len).
pub(crate) const FUNC_SKB_LOAD_BYTES: i32 = 26;
/// `offsetof(struct __sk_buff, protocol)`: the packet's EtherType, in network order.
pub(crate) const SKB_PROTOCOL: i16 = 16;
/// `offsetof(struct bpf_sock_addr, user_ip4)` and `user_ip6`, in network order.
pub(crate) const SOCK_ADDR_USER_IP4: i16 = 4;
pub(crate) const SOCK_ADDR_USER_IP6: i16 = 8;
/// htons(ETH_P_IP) and htons(ETH_P_IPV6) as a little-endian load of `protocol` sees them.
pub(crate) const PROTO_IPV4: i32 = u16::from_ne_bytes(0x0800u16.to_be_bytes()) as i32;
pub(crate) const PROTO_IPV6: i32 = u16::from_ne_bytes(0x86ddu16.to_be_bytes()) as i32;

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;
const R7: u8 = 7;
const R10: u8 = 10;
/// The 16 bytes below the frame pointer receive the address.
const ADDR_SLOT: i16 = -16;

const ALLOW: i32 = 1;
const DROP: i32 = 0;

/// The program for one direction: instructions ready for BPF_PROG_LOAD.
pub(crate) fn program(rules: &Rules, direction: Direction) -> Vec<Insn> {
    let mut asm = Asm::default();
    let allow = asm.label();
    let drop = asm.label();
    let ipv4 = asm.label();
    let ipv6 = asm.label();

    asm.emit(ALU64_MOV_X, R6, R1, 0, 0);
    asm.emit(LDX_W, R7, R6, SKB_PROTOCOL, 0);
    asm.jump(JMP_JEQ_K, R7, PROTO_IPV4, ipv4);
    asm.jump(JMP_JEQ_K, R7, PROTO_IPV6, ipv6);
    // Neither IPv4 nor IPv6: not the firewall's business (systemd lets these pass too).
    asm.jump(JMP_JA, 0, 0, allow);

    for (family_label, v4) in [(ipv4, true), (ipv6, false)] {
        asm.bind(family_label);
        if !family_filtered(rules, v4) {
            asm.jump(JMP_JA, 0, 0, allow);
            continue;
        }
        load_address(&mut asm, v4, direction, drop);
        judge(&mut asm, rules, v4, allow, drop);
    }
    verdicts(asm, allow, drop)
}

/// Whether `rules` drop anything of the family: the programs of a family without deny
/// entries would only pass everything.
pub(crate) fn family_filtered(rules: &Rules, v4: bool) -> bool {
    rules.deny.iter().any(|p| p.is_ipv4() == v4)
}

/// The program for connect(2) on sockets of one family (`cgroup/connect4` or `connect6`):
/// refuses, with EPERM at once, a connection to an address the packet programs would drop,
/// instead of letting its SYNs be dropped until TCP gives up. The packet programs still
/// judge every packet; this one only makes the refusal visible. An IPv4-mapped IPv6
/// address is judged by the IPv4 rules, as its packets will be.
pub(crate) fn connect_program(rules: &Rules, v6: bool) -> Vec<Insn> {
    let mut asm = Asm::default();
    let allow = asm.label();
    let refuse = asm.label();
    asm.emit(ALU64_MOV_X, R6, R1, 0, 0);
    if !v6 {
        asm.emit(LDX_W, R2, R6, SOCK_ADDR_USER_IP4, 0);
        asm.emit(ALU_TO_BE, R2, 0, 0, 32);
        judge_or_pass(&mut asm, rules, true, allow, refuse);
        return verdicts(asm, allow, refuse);
    }
    for word in 0..4u8 {
        let reg = R2 + word;
        asm.emit(LDX_W, reg, R6, SOCK_ADDR_USER_IP6 + 4 * i16::from(word), 0);
        asm.emit(ALU_TO_BE, reg, 0, 0, 32);
    }
    let native = asm.label();
    asm.jump(JMP32_JNE_K, R2, 0, native);
    asm.jump(JMP32_JNE_K, R3, 0, native);
    asm.jump(JMP32_JNE_K, R4, 0xffff, native);
    asm.emit(ALU_MOV_X, R2, R5, 0, 0);
    judge_or_pass(&mut asm, rules, true, allow, refuse);
    asm.bind(native);
    judge_or_pass(&mut asm, rules, false, allow, refuse);
    verdicts(asm, allow, refuse)
}

/// [`judge`], or a jump to `allow` for a family the rules do not filter.
fn judge_or_pass(asm: &mut Asm, rules: &Rules, v4: bool, allow: Label, drop: Label) {
    if family_filtered(rules, v4) {
        judge(asm, rules, v4, allow, drop);
    } else {
        asm.jump(JMP_JA, 0, 0, allow);
    }
}

/// Jumps to `allow` or `drop` for the address loaded in r2 (IPv4) or r2..r5 (IPv6), by
/// systemd's rule: allowed if in an allow prefix, else dropped if in a deny one, else allowed.
fn judge(asm: &mut Asm, rules: &Rules, v4: bool, allow: Label, drop: Label) {
    let family = |p: &&IpPrefix| p.is_ipv4() == v4;
    let allowed = rules.allow.iter().filter(family).map(|p| (p, allow));
    let denied = rules.deny.iter().filter(family).map(|p| (p, drop));
    // A zero-length prefix matches every address: what follows it is never reached, and
    // the verifier refuses unreachable instructions.
    let always = allowed
        .chain(denied)
        .any(|(prefix, target)| match_prefix(asm, prefix, target));
    if !always {
        asm.jump(JMP_JA, 0, 0, allow);
    }
}

/// The two endings the program jumps to: 1 lets the packet or connect through, 0 not; one
/// that no jump reaches is left out (the verifier refuses unreachable instructions).
fn verdicts(mut asm: Asm, allow: Label, drop: Label) -> Vec<Insn> {
    for (label, verdict) in [(allow, ALLOW), (drop, DROP)] {
        if asm.jumps.iter().any(|(_, l)| l.0 == label.0) {
            asm.bind(label);
            asm.emit(ALU64_MOV_K, R0, 0, 0, verdict);
            asm.emit(EXIT, 0, 0, 0, 0);
        }
    }
    asm.finish()
}

/// Copies the remote address to the stack and leaves it in r2 (IPv4) or r2..r5 (IPv6), one
/// 32-bit word each in host order, so prefixes compare as plain numbers. A packet too short
/// to hold the address is dropped.
fn load_address(asm: &mut Asm, v4: bool, direction: Direction, unreadable: Label) {
    // struct iphdr: saddr at 12, daddr at 16; struct ipv6hdr: saddr at 8, daddr at 24.
    let (offset, words) = match (v4, direction) {
        (true, Direction::Ingress) => (12, 1),
        (true, Direction::Egress) => (16, 1),
        (false, Direction::Ingress) => (8, 4),
        (false, Direction::Egress) => (24, 4),
    };
    asm.emit(ALU64_MOV_X, R1, R6, 0, 0);
    asm.emit(ALU64_MOV_K, R2, 0, 0, offset);
    asm.emit(ALU64_MOV_X, R3, R10, 0, 0);
    asm.emit(ALU64_ADD_K, R3, 0, 0, i32::from(ADDR_SLOT));
    asm.emit(ALU64_MOV_K, R4, 0, 0, 4 * words);
    asm.emit(CALL, 0, 0, 0, FUNC_SKB_LOAD_BYTES);
    asm.jump(JMP_JNE_K, R0, 0, unreadable);
    for word in 0..words as u8 {
        let reg = R2 + word;
        asm.emit(LDX_W, reg, R10, ADDR_SLOT + 4 * i16::from(word), 0);
        asm.emit(ALU_TO_BE, reg, 0, 0, 32);
    }
}

/// Jumps to `target` when the loaded address is in `prefix`; falls through otherwise.
/// Returns whether the jump is unconditional (a zero-length prefix).
fn match_prefix(asm: &mut Asm, prefix: &IpPrefix, target: Label) -> bool {
    if prefix.prefix_len() == 0 {
        asm.jump(JMP_JA, 0, 0, target);
        return true;
    }
    let words: Vec<u32> = match prefix.addr() {
        IpAddr::V4(a) => vec![u32::from(a)],
        IpAddr::V6(a) => a
            .octets()
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    };
    let miss = asm.label();
    for (i, word) in words.iter().enumerate() {
        let bits = u32::from(prefix.prefix_len())
            .saturating_sub(32 * i as u32)
            .min(32) as u8;
        if bits == 0 {
            break;
        }
        let reg = R2 + i as u8;
        // The constant is the word's bit pattern; JMP32 compares the low 32 bits only.
        let value = *word as i32;
        if bits == 32 {
            asm.jump(JMP32_JNE_K, reg, value, miss);
        } else {
            asm.emit(ALU_MOV_X, R1, reg, 0, 0);
            asm.emit(ALU_AND_K, R1, 0, 0, mask32(bits) as i32);
            asm.jump(JMP32_JNE_K, R1, value, miss);
        }
    }
    asm.jump(JMP_JA, 0, 0, target);
    asm.bind(miss);
    false
}

#[derive(Debug, Clone, Copy)]
struct Label(usize);

/// A tiny assembler: instructions plus forward jumps resolved at the end.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    jumps: Vec<(usize, Label)>,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    fn bind(&mut self, label: Label) {
        self.labels[label.0] = Some(self.insns.len());
    }

    fn emit(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            regs: dst | (src << 4),
            off,
            imm,
        });
    }

    fn jump(&mut self, code: u8, dst: u8, imm: i32, target: Label) {
        self.jumps.push((self.insns.len(), target));
        self.emit(code, dst, 0, 0, imm);
    }

    fn finish(mut self) -> Vec<Insn> {
        for (at, label) in &self.jumps {
            // Every label used is bound by `program`; the offset counts from the next
            // instruction. Programs stay far below i16::MAX instructions (bounded lists).
            let target = self.labels[label.0].unwrap_or(self.insns.len());
            self.insns[*at].off = (target as i64 - *at as i64 - 1) as i16;
        }
        self.insns
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> Rules {
        let parse = |l: &[&str]| l.iter().map(|s| IpPrefix::parse(s).unwrap()).collect();
        Rules {
            allow: parse(allow),
            deny: parse(deny),
        }
    }

    /// A packet as the program sees it: the EtherType in `__sk_buff.protocol` and the bytes
    /// from the network header on.
    pub(crate) struct Packet {
        protocol: u16,
        bytes: Vec<u8>,
    }

    /// An IPv4 or IPv6 header (no payload) from `src` to `dst`.
    pub(crate) fn packet(src: &str, dst: &str) -> Packet {
        let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut bytes = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0];
                bytes.extend(s.octets());
                bytes.extend(d.octets());
                Packet {
                    protocol: 0x0800,
                    bytes,
                }
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut bytes = vec![0x60, 0, 0, 0, 0, 0, 6, 64];
                bytes.extend(s.octets());
                bytes.extend(d.octets());
                Packet {
                    protocol: 0x86dd,
                    bytes,
                }
            }
            _ => panic!("mixed families"),
        }
    }

    const CTX: u64 = 0x1000_0000;
    const STACK_TOP: u64 = 0x2000_0000;

    /// Runs `insns` on `packet` with an interpreter of the instructions `program` emits
    /// (anything else panics) and returns r0.
    pub(crate) fn run(insns: &[Insn], packet: &Packet) -> u64 {
        let mut ctx = [0u8; 192];
        ctx[SKB_PROTOCOL as usize..][..2].copy_from_slice(&packet.protocol.to_be_bytes());
        run_with(insns, &ctx, packet)
    }

    /// Runs a connect program for a connect(2) to `dst` (a `struct bpf_sock_addr`).
    fn run_connect(insns: &[Insn], dst: &str) -> u64 {
        let mut ctx = [0u8; 192];
        match dst.parse::<IpAddr>().unwrap() {
            IpAddr::V4(a) => ctx[4..8].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => ctx[8..24].copy_from_slice(&a.octets()),
        }
        let none = Packet {
            protocol: 0,
            bytes: Vec::new(),
        };
        run_with(insns, &ctx, &none)
    }

    fn run_with(insns: &[Insn], ctx: &[u8], packet: &Packet) -> u64 {
        let mut stack = [0u8; 512];
        let mut r = [0u64; 11];
        r[1] = CTX;
        r[10] = STACK_TOP;
        let mut pc = 0usize;
        for _ in 0..100_000 {
            let insn = insns[pc];
            let (dst, src) = ((insn.regs & 0xf) as usize, (insn.regs >> 4) as usize);
            let imm = insn.imm as i64 as u64;
            let mut next = pc + 1;
            let jump = |cond: bool| {
                if cond {
                    (pc as i64 + 1 + i64::from(insn.off)) as usize
                } else {
                    pc + 1
                }
            };
            match insn.code {
                ALU64_MOV_X => r[dst] = r[src],
                ALU64_MOV_K => r[dst] = imm,
                ALU64_ADD_K => r[dst] = r[dst].wrapping_add(imm),
                ALU_MOV_X => r[dst] = r[src] & 0xffff_ffff,
                ALU_AND_K => r[dst] = (r[dst] & imm) & 0xffff_ffff,
                ALU_TO_BE => {
                    assert_eq!(insn.imm, 32);
                    r[dst] = u64::from((r[dst] as u32).swap_bytes());
                }
                LDX_W => {
                    let at = r[src].wrapping_add(insn.off as i64 as u64);
                    let bytes: [u8; 4] = if (CTX..CTX + ctx.len() as u64).contains(&at) {
                        ctx[(at - CTX) as usize..][..4].try_into().unwrap()
                    } else {
                        let i = (at - (STACK_TOP - stack.len() as u64)) as usize;
                        stack[i..][..4].try_into().unwrap()
                    };
                    r[dst] = u64::from(u32::from_le_bytes(bytes));
                }
                CALL => {
                    assert_eq!(insn.imm, FUNC_SKB_LOAD_BYTES);
                    assert_eq!(r[1], CTX);
                    let (off, len) = (r[2] as usize, r[4] as usize);
                    let to = (r[3] - (STACK_TOP - stack.len() as u64)) as usize;
                    r[0] = match packet.bytes.get(off..off + len) {
                        Some(b) => {
                            stack[to..to + len].copy_from_slice(b);
                            0
                        }
                        None => (-14i64) as u64,
                    };
                    r[1..=5].fill(0xdead);
                }
                JMP_JA => next = jump(true),
                JMP_JEQ_K => next = jump(r[dst] == imm),
                JMP_JNE_K => next = jump(r[dst] != imm),
                JMP32_JNE_K => next = jump(r[dst] as u32 != insn.imm as u32),
                EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x} at {pc}"),
            }
            pc = next;
        }
        panic!("program did not exit")
    }

    fn verdict(rules: &Rules, direction: Direction, src: &str, dst: &str) -> bool {
        run(&program(rules, direction), &packet(src, dst)) == 1
    }

    #[test]
    fn egress_is_judged_by_the_destination() {
        let r = rules(&["127.0.0.1"], &["0.0.0.0/0"]);

        assert!(verdict(&r, Direction::Egress, "10.9.9.9", "127.0.0.1"));
        assert!(!verdict(&r, Direction::Egress, "127.0.0.1", "127.0.0.2"));
    }

    #[test]
    fn ingress_is_judged_by_the_source() {
        let r = rules(&["127.0.0.1"], &["0.0.0.0/0"]);

        assert!(verdict(&r, Direction::Ingress, "127.0.0.1", "127.0.0.2"));
        assert!(!verdict(&r, Direction::Ingress, "127.0.0.2", "127.0.0.1"));
    }

    #[test]
    fn allow_wins_over_deny() {
        let r = rules(&["10.1.0.0/16"], &["10.0.0.0/8"]);

        assert!(verdict(&r, Direction::Egress, "1.1.1.1", "10.1.200.3"));
        assert!(!verdict(&r, Direction::Egress, "1.1.1.1", "10.2.0.1"));
    }

    #[test]
    fn an_address_in_neither_list_passes() {
        let r = rules(&[], &["192.168.0.0/16", "fd00::/8"]);

        assert!(verdict(&r, Direction::Egress, "1.1.1.1", "8.8.8.8"));
        assert!(verdict(&r, Direction::Egress, "::1", "2001:db8::1"));
        assert!(!verdict(&r, Direction::Egress, "1.1.1.1", "192.168.7.7"));
        assert!(!verdict(&r, Direction::Egress, "::1", "fd12::1"));
    }

    #[test]
    fn prefix_lengths_are_honoured_bit_by_bit() {
        let r = rules(&[], &["172.16.0.0/12", "2001:db8:8000::/33"]);

        assert!(!verdict(&r, Direction::Egress, "1.1.1.1", "172.31.255.255"));
        assert!(verdict(&r, Direction::Egress, "1.1.1.1", "172.32.0.0"));
        assert!(verdict(&r, Direction::Egress, "1.1.1.1", "172.15.255.255"));
        assert!(!verdict(&r, Direction::Egress, "::1", "2001:db8:ffff::1"));
        assert!(verdict(&r, Direction::Egress, "::1", "2001:db8:7fff::1"));
    }

    #[test]
    fn families_are_judged_by_their_own_prefixes() {
        let r = rules(&["::1"], &["0.0.0.0/0", "::/0"]);

        assert!(verdict(&r, Direction::Ingress, "::1", "::1"));
        assert!(!verdict(&r, Direction::Ingress, "::2", "::1"));
        assert!(!verdict(&r, Direction::Ingress, "127.0.0.1", "127.0.0.1"));
    }

    #[test]
    fn a_family_without_deny_entries_passes_untouched() {
        let r = rules(&[], &["::/0"]);

        assert!(verdict(&r, Direction::Egress, "127.0.0.1", "8.8.8.8"));
        assert!(!verdict(&r, Direction::Egress, "::1", "::1"));
    }

    #[test]
    fn full_length_ipv6_prefixes_compare_all_four_words() {
        let r = rules(&["2001:db8::1:2:3:4"], &["::/0"]);

        assert!(verdict(&r, Direction::Egress, "::1", "2001:db8::1:2:3:4"));
        assert!(!verdict(&r, Direction::Egress, "::1", "2001:db8::1:2:3:5"));
        assert!(!verdict(&r, Direction::Egress, "::1", "2001:db9::1:2:3:4"));
    }

    #[test]
    fn non_ip_packets_pass() {
        let r = rules(&[], &["0.0.0.0/0", "::/0"]);
        let arp = Packet {
            protocol: 0x0806,
            bytes: vec![0; 28],
        };

        assert_eq!(run(&program(&r, Direction::Ingress), &arp), 1);
    }

    #[test]
    fn a_truncated_header_is_dropped() {
        let r = rules(&[], &["10.0.0.0/8"]);
        let short = Packet {
            protocol: 0x0800,
            bytes: vec![0x45; 14],
        };

        assert_eq!(run(&program(&r, Direction::Egress), &short), 0);
    }

    /// The kernel refuses a program with an instruction no path reaches.
    fn unreachable(insns: &[Insn]) -> Vec<usize> {
        let mut seen = vec![false; insns.len()];
        let mut todo = vec![0usize];
        while let Some(pc) = todo.pop() {
            if pc >= insns.len() || std::mem::replace(&mut seen[pc], true) {
                continue;
            }
            let insn = insns[pc];
            let taken = (pc as i64 + 1 + i64::from(insn.off)) as usize;
            match insn.code {
                EXIT => {}
                JMP_JA => todo.push(taken),
                JMP_JEQ_K | JMP_JNE_K | JMP32_JNE_K => todo.extend([pc + 1, taken]),
                _ => todo.push(pc + 1),
            }
        }
        (0..insns.len()).filter(|i| !seen[*i]).collect()
    }

    #[test]
    fn every_instruction_is_reachable_even_after_a_match_all_prefix() {
        for r in [
            rules(&["127.0.0.1"], &["0.0.0.0/0", "::/0"]),
            rules(&["0.0.0.0/0"], &["10.0.0.0/8", "::/0", "fe80::/64"]),
            rules(&[], &["10.0.0.0/8"]),
            rules(&["::1", "10.0.0.0/8"], &["fe80::/64"]),
        ] {
            for direction in [Direction::Ingress, Direction::Egress] {
                assert_eq!(
                    unreachable(&program(&r, direction)),
                    Vec::<usize>::new(),
                    "{r:?}"
                );
            }
        }
    }

    #[test]
    fn an_allow_all_prefix_lets_its_family_through() {
        let r = rules(&["::/0"], &["0.0.0.0/0", "::/0"]);

        assert!(verdict(&r, Direction::Egress, "::1", "2001:db8::1"));
        assert!(!verdict(&r, Direction::Egress, "127.0.0.1", "127.0.0.1"));
    }

    #[test]
    fn jumps_land_inside_the_program() {
        let r = rules(&["10.0.0.0/8", "::1"], &["0.0.0.0/0", "fe80::/64"]);

        for direction in [Direction::Ingress, Direction::Egress] {
            let insns = program(&r, direction);
            for (i, insn) in insns.iter().enumerate() {
                if [JMP_JA, JMP_JEQ_K, JMP_JNE_K, JMP32_JNE_K].contains(&insn.code) {
                    let target = i as i64 + 1 + i64::from(insn.off);
                    assert!((0..insns.len() as i64).contains(&target), "insn {i}");
                }
            }
            assert_eq!(insns.last().map(|i| i.code), Some(EXIT));
        }
    }

    fn connects(rules: &Rules, dst: &str) -> bool {
        let v6 = dst.contains(':');
        run_connect(&connect_program(rules, v6), dst) == 1
    }

    #[test]
    fn a_connect_is_judged_like_the_packets_it_would_send() {
        let r = rules(&["127.0.0.1", "::1"], &["0.0.0.0/0", "::/0"]);

        assert!(connects(&r, "127.0.0.1"));
        assert!(!connects(&r, "127.0.0.2"));
        assert!(connects(&r, "::1"));
        assert!(!connects(&r, "2001:db8::1"));
    }

    #[test]
    fn an_ipv4_mapped_connect_is_judged_by_the_ipv4_rules() {
        let r = rules(&[], &["10.0.0.0/8"]);

        assert!(!connects(&r, "::ffff:10.1.2.3"));
        assert!(connects(&r, "::ffff:11.1.2.3"));
        assert!(connects(&r, "10::1"));
    }

    #[test]
    fn connect_programs_have_no_unreachable_instruction() {
        for r in [
            rules(&[], &["10.0.0.0/8"]),
            rules(&[], &["::/0"]),
            rules(&["0.0.0.0/0"], &["0.0.0.0/0", "fe80::/64"]),
        ] {
            if family_filtered(&r, true) {
                assert_eq!(
                    unreachable(&connect_program(&r, false)),
                    Vec::<usize>::new(),
                    "{r:?}"
                );
            }
            assert_eq!(
                unreachable(&connect_program(&r, true)),
                Vec::<usize>::new(),
                "{r:?}"
            );
        }
    }
}
