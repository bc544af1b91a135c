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
    /// Fail with this errno, silently (expected behaviour, not a violation).
    Errno(u16),
    Kill,
}

impl Action {
    fn ret(self) -> u32 {
        match self {
            Action::Allow => RET_ALLOW,
            Action::Report => RET_USER_NOTIF,
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
}

/// Compiles to BPF. Fails only if a per-syscall block grows past BPF's 255-instruction
/// jump range, which the rules we generate never approach.
pub fn compile(spec: &FilterSpec) -> Result<Vec<Insn>, String> {
    let mut out = vec![
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, OFF_NR),
        // x32 ABI calls alias the x86_64 numbers with bit 30 set: refuse them outright.
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
    ];
    if let Some((sendmsg_nr, fd)) = spec.handshake {
        out.extend([
            jump(BPF_JEQ_K, sendmsg_nr, 0, 4),
            stmt(BPF_LD_W_ABS, off_arg_lo(0)),
            jump(BPF_JEQ_K, fd, 0, 1),
            stmt(BPF_RET_K, RET_ALLOW),
            stmt(BPF_LD_W_ABS, OFF_NR),
        ]);
    }
    for (nr, call) in &spec.calls {
        let block = compile_call(call)?;
        let skip = u8::try_from(block.len())
            .map_err(|_| format!("rules for syscall {nr} are too long"))?;
        out.push(jump(BPF_JEQ_K, *nr, 0, skip));
        out.extend(block);
    }
    out.push(stmt(BPF_RET_K, spec.default.ret()));
    Ok(out)
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
    fn default_allow_mode() {
        let mut calls = BTreeMap::new();
        calls.insert(101, CallRules::always(Action::Report)); // ptrace
        let p = compile(&FilterSpec {
            calls,
            default: Action::Allow,
            handshake: None,
        })
        .unwrap();
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 101, [0; 6]), RET_USER_NOTIF);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 0, [0; 6]), RET_ALLOW);
    }
}
