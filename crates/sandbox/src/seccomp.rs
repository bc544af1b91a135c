//! Compiles a seccomp filter description into classic BPF. Pure: no kernel calls here
//! (installing the program is `sys::install_seccomp`).
//!
//! Why not `seccompiler`: a filter there has exactly two outcomes (match / mismatch), and
//! ours needs four in one program: allow, deny-and-report through a user-notification
//! listener (SECCOMP_RET_USER_NOTIF, which seccompiler cannot emit), a plain errno
//! (ENOSYS for clone3, so libc falls back to clone whose flags can be checked), and kill
//! for foreign architectures. The compiler is ~150 lines and tested with an interpreter.

use std::collections::BTreeMap;

pub const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_ERRNO: u32 = 0x0005_0000;
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;

// struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_lo(i: u8) -> u32 {
    16 + 8 * i as u32
}

// BPF opcodes used.
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
const BPF_JA: u16 = 0x05; // BPF_JMP | BPF_JA (32-bit offset in k)

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}
const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

/// What happens to a system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Action {
    Allow,
    /// Fail with EPERM and tell the supervisor which call it was (user notification).
    Report,
    /// Let the supervisor look at the arguments, then proceed (user notification answered
    /// with CONTINUE). For reporting only: enforcement lies elsewhere (Landlock, netns).
    Inspect,
    /// Fail with this errno, silently (expected behaviour, not a violation).
    Errno(u16),
    Kill,
}

impl Action {
    fn ret(self) -> u32 {
        match self {
            Action::Allow => RET_ALLOW,
            Action::Report | Action::Inspect => RET_USER_NOTIF,
            Action::Errno(e) => RET_ERRNO | e as u32,
            Action::Kill => RET_KILL_PROCESS,
        }
    }
}

/// `(args[arg] & mask) == value` on the low 32 bits, which is all the kernel reads of the
/// int-sized arguments we check (flags, ioctl request, socket domain and type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ArgEq {
    pub arg: u8,
    pub mask: u32,
    pub value: u32,
}

/// If every check holds, take `action`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rule {
    pub all: Vec<ArgEq>,
    pub action: Action,
}

/// Rules for one syscall: the first rule that matches decides, else `otherwise`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CallRules {
    pub rules: Vec<Rule>,
    pub otherwise: Action,
}

impl CallRules {
    pub fn always(action: Action) -> CallRules {
        CallRules {
            rules: Vec::new(),
            otherwise: action,
        }
    }
}

/// A whole filter: per-syscall rules, a default, and the one-fd exception the sandbox
/// needs to hand the notification listener to the supervisor after the filter is live.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FilterSpec {
    pub calls: BTreeMap<u32, CallRules>,
    pub default: Action,
    /// `sendmsg(fd, ...)` on this fd is allowed before any other rule. The fd number is
    /// above RLIMIT_NOFILE, so the sandboxed program can never own a descriptor with it.
    pub handshake: Option<(u32, u32)>,
    /// Numbers from this one up name no syscall the kernel has: they get this action
    /// (ENOSYS, quietly) instead of `default`, so probing them costs the supervisor nothing.
    pub beyond: Option<(u32, Action)>,
}

/// Compiles to BPF. The syscall number is dispatched through a balanced binary search
/// (JGE splits, unconditional 32-bit jumps to per-call blocks), so any call costs about
/// log2(n) comparisons. That matters twice: at run time for calls the kernel cannot cache,
/// and at install time, when the kernel emulates the filter for every syscall number to
/// build its allow cache (a linear chain made that ~0.3 ms per sandbox).
pub fn compile(spec: &FilterSpec) -> Result<Vec<Insn>, String> {
    let mut asm = Asm::default();
    asm.insns.extend([
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFF_NR),
        // x32 ABI calls alias the x86_64 numbers with bit 30 set: refuse them outright.
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
    ]);
    if let Some((sendmsg_nr, fd)) = spec.handshake {
        asm.insns.extend([
            jump(BPF_JEQ_K, sendmsg_nr, 0, 4),
            stmt(BPF_LD_W_ABS, off_arg_lo(0)),
            jump(BPF_JEQ_K, fd, 0, 1),
            stmt(BPF_RET_K, RET_ALLOW),
            stmt(BPF_LD_W_ABS, OFF_NR),
        ]);
    }
    // Blocks: one per distinct unconditional action (shared), one per conditional call.
    let mut blocks: Vec<(usize, Vec<Insn>)> = Vec::new();
    let mut simple: BTreeMap<Action, usize> = BTreeMap::new();
    let mut target_of = |asm: &mut Asm, call: &CallRules| -> Result<usize, String> {
        if call.rules.is_empty() {
            if let Some(l) = simple.get(&call.otherwise) {
                return Ok(*l);
            }
            let l = asm.label();
            simple.insert(call.otherwise, l);
            blocks.push((l, vec![stmt(BPF_RET_K, call.otherwise.ret())]));
            return Ok(l);
        }
        let l = asm.label();
        blocks.push((l, compile_call(call)?));
        Ok(l)
    };
    let default = target_of(&mut asm, &CallRules::always(spec.default))?;
    // Segments [start, next start) of syscall numbers with one target; runs of numbers with
    // the same unconditional action collapse into one segment.
    let mut segments: Vec<(u32, usize)> = Vec::new();
    let mut next = 0u32;
    for (nr, call) in &spec.calls {
        let target = target_of(&mut asm, call)?;
        if *nr > next {
            push_segment(&mut segments, next, default);
        }
        push_segment(&mut segments, *nr, target);
        next = nr + 1;
    }
    push_segment(&mut segments, next, default);
    if let Some((first, action)) = spec.beyond {
        if first >= next {
            let target = target_of(&mut asm, &CallRules::always(action))?;
            push_segment(&mut segments, first, target);
        }
    }
    asm.tree(&segments);
    for (label, code) in blocks {
        asm.bind(label);
        asm.insns.extend(code);
    }
    asm.finish()
}

fn push_segment(segments: &mut Vec<(u32, usize)>, start: u32, target: usize) {
    if segments.last().map(|(_, t)| *t) != Some(target) {
        segments.push((start, target));
    }
}

/// A tiny assembler: labels and far jumps, patched at the end.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, usize)>,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }

    fn bind(&mut self, label: usize) {
        self.labels[label] = Some(self.insns.len());
    }

    fn jump_to(&mut self, label: usize) {
        self.fixups.push((self.insns.len(), label));
        self.insns.push(stmt(BPF_JA, 0));
    }

    /// Dispatch on the syscall number (in the accumulator) to the segment containing it.
    /// `segments` are (first number, target) sorted by number, the first starting at 0.
    fn tree(&mut self, segments: &[(u32, usize)]) {
        if segments.len() == 1 {
            self.jump_to(segments[0].1);
            return;
        }
        let (left, right) = segments.split_at(segments.len() / 2);
        let right_label = self.label();
        // nr >= first of the right half: fall through to the jump there; else skip it.
        self.insns.push(jump(BPF_JGE_K, right[0].0, 0, 1));
        self.jump_to(right_label);
        self.tree(left);
        self.bind(right_label);
        self.tree(right);
    }

    fn finish(mut self) -> Result<Vec<Insn>, String> {
        for (at, label) in self.fixups {
            let target = self.labels[label].ok_or("unbound label")?;
            self.insns[at].k = u32::try_from(target - at - 1).map_err(|_| "jump too far")?;
        }
        if self.insns.len() > 4096 {
            return Err(format!(
                "filter has {} instructions, more than the kernel's 4096",
                self.insns.len()
            ));
        }
        Ok(self.insns)
    }
}

/// The block run when the syscall number matched. Arg checks clobber the accumulator, so
/// nothing after a block may rely on it: every block ends in a return.
fn compile_call(call: &CallRules) -> Result<Vec<Insn>, String> {
    let mut out = Vec::new();
    for rule in &call.rules {
        let mut body = Vec::new();
        for check in &rule.all {
            body.push(stmt(BPF_LD_W_ABS, off_arg_lo(check.arg)));
            if check.mask != u32::MAX {
                body.push(stmt(BPF_AND_K, check.mask));
            }
            // On mismatch jump past the remaining checks and the return: patched below.
            body.push(jump(BPF_JEQ_K, check.value, 0, 0));
        }
        body.push(stmt(BPF_RET_K, rule.action.ret()));
        // Patch each jeq's false branch to land just past this rule's return.
        let len = body.len();
        for (idx, insn) in body.iter_mut().enumerate() {
            if insn.code == BPF_JEQ_K {
                insn.jf = u8::try_from(len - idx - 1).map_err(|_| "rule too long".to_string())?;
            }
        }
        out.extend(body);
    }
    out.push(stmt(BPF_RET_K, call.otherwise.ret()));
    Ok(out)
}

/// A classic-BPF interpreter for the subset we emit, to test filters without a kernel.
pub fn run(prog: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
    }
    let (mut acc, mut pc) = (0u32, 0usize);
    loop {
        let i = prog[pc];
        pc += 1;
        match i.code {
            BPF_LD_W_ABS => {
                let k = i.k as usize;
                acc = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap());
            }
            BPF_AND_K => acc &= i.k,
            BPF_JEQ_K => pc += if acc == i.k { i.jt } else { i.jf } as usize,
            BPF_JGE_K => pc += if acc >= i.k { i.jt } else { i.jf } as usize,
            BPF_JA => pc += i.k as usize,
            BPF_RET_K => return i.k,
            other => panic!("unexpected opcode {other:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FilterSpec {
        let mut calls = BTreeMap::new();
        calls.insert(0, CallRules::always(Action::Allow)); // read
        calls.insert(435, CallRules::always(Action::Errno(38))); // clone3
        calls.insert(
            56, // clone: allowed without namespace flags
            CallRules {
                rules: vec![Rule {
                    all: vec![ArgEq {
                        arg: 0,
                        mask: 0x7E02_0080,
                        value: 0,
                    }],
                    action: Action::Allow,
                }],
                otherwise: Action::Report,
            },
        );
        calls.insert(
            16, // ioctl: TIOCSTI reported, the rest allowed
            CallRules {
                rules: vec![Rule {
                    all: vec![ArgEq {
                        arg: 1,
                        mask: u32::MAX,
                        value: 0x5412,
                    }],
                    action: Action::Report,
                }],
                otherwise: Action::Allow,
            },
        );
        calls.insert(
            41, // socket: AF_INET + SOCK_DGRAM reported
            CallRules {
                rules: vec![Rule {
                    all: vec![
                        ArgEq {
                            arg: 0,
                            mask: u32::MAX,
                            value: 2,
                        },
                        ArgEq {
                            arg: 1,
                            mask: 0xf,
                            value: 2,
                        },
                    ],
                    action: Action::Report,
                }],
                otherwise: Action::Allow,
            },
        );
        FilterSpec {
            calls,
            default: Action::Report,
            handshake: Some((46, 1024)),
            beyond: None,
        }
    }

    #[test]
    fn decisions() {
        let p = compile(&spec()).unwrap();
        let a = AUDIT_ARCH_X86_64;
        assert_eq!(run(&p, a, 0, [0; 6]), RET_ALLOW);
        assert_eq!(
            run(&p, a, 1, [0; 6]),
            RET_USER_NOTIF,
            "write is not allowed"
        );
        assert_eq!(run(&p, a, 435, [0; 6]), RET_ERRNO | 38);
        assert_eq!(run(&p, a, 56, [0x11, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            run(&p, a, 56, [0x1000_0011, 0, 0, 0, 0, 0]),
            RET_USER_NOTIF,
            "CLONE_NEWUSER"
        );
        assert_eq!(run(&p, a, 16, [1, 0x5412, 0, 0, 0, 0]), RET_USER_NOTIF);
        assert_eq!(run(&p, a, 16, [1, 0x5401, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            run(&p, a, 16, [1, 0xffff_ffff_0000_5412, 0, 0, 0, 0]),
            RET_USER_NOTIF,
            "upper bits ignored like the kernel"
        );
        assert_eq!(
            run(&p, a, 41, [2, 2 | 0x80000, 0, 0, 0, 0]),
            RET_USER_NOTIF,
            "udp with SOCK_CLOEXEC"
        );
        assert_eq!(run(&p, a, 41, [2, 1, 0, 0, 0, 0]), RET_ALLOW, "tcp");
        assert_eq!(
            run(&p, a, 41, [10, 2, 0, 0, 0, 0]),
            RET_ALLOW,
            "only AF_INET in this rule"
        );
        assert_eq!(
            run(&p, a, 46, [1024, 0, 0, 0, 0, 0]),
            RET_ALLOW,
            "handshake fd"
        );
        assert_eq!(
            run(&p, a, 46, [3, 0, 0, 0, 0, 0]),
            RET_USER_NOTIF,
            "other sendmsg"
        );
        assert_eq!(
            run(&p, 0x4000_0003, 0, [0; 6]),
            RET_KILL_PROCESS,
            "i386 entry"
        );
        assert_eq!(run(&p, a, X32_SYSCALL_BIT, [0; 6]), RET_KILL_PROCESS, "x32");
    }

    #[test]
    fn every_number_reaches_its_own_block() {
        // 300 calls, alternating actions: the tree must route each number correctly.
        let mut calls = BTreeMap::new();
        for nr in 0..300u32 {
            calls.insert(
                nr * 3 / 2,
                CallRules::always(if nr % 2 == 0 {
                    Action::Allow
                } else {
                    Action::Errno(nr as u16)
                }),
            );
        }
        let spec = FilterSpec {
            calls: calls.clone(),
            default: Action::Report,
            handshake: None,
            beyond: Some((600, Action::Errno(38))),
        };
        let p = compile(&spec).unwrap();
        for nr in 0..460u32 {
            let want = calls
                .get(&nr)
                .map(|c| c.otherwise.ret())
                .unwrap_or(RET_USER_NOTIF);
            assert_eq!(run(&p, AUDIT_ARCH_X86_64, nr, [0; 6]), want, "nr {nr}");
        }
        assert!(p.len() < 1800, "{} instructions", p.len());
    }

    #[test]
    fn runs_of_equal_actions_collapse() {
        let mut calls = BTreeMap::new();
        for nr in 0..200u32 {
            calls.insert(nr, CallRules::always(Action::Allow));
        }
        let p = compile(&FilterSpec {
            calls,
            default: Action::Report,
            handshake: None,
            beyond: None,
        })
        .unwrap();
        assert!(p.len() < 20, "{} instructions", p.len());
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 199, [0; 6]), RET_ALLOW);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 200, [0; 6]), RET_USER_NOTIF);
    }

    #[test]
    fn default_allow_mode() {
        let mut calls = BTreeMap::new();
        calls.insert(101, CallRules::always(Action::Report)); // ptrace
        let p = compile(&FilterSpec {
            calls,
            default: Action::Allow,
            handshake: None,
            beyond: None,
        })
        .unwrap();
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 101, [0; 6]), RET_USER_NOTIF);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 0, [0; 6]), RET_ALLOW);
    }
}
