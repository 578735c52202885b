//! cgroup v2 device rules: a `BPF_PROG_TYPE_CGROUP_DEVICE` program, the
//! v2 counterpart of the v1 `devices.deny`/`devices.allow` files
//! ([`super::devices`]), what runc and crun load for the same purpose.
//!
//! The program is a handful of raw BPF instructions built here ([`program`],
//! pure) and loaded with the `bpf(2)` system call through `libc` (no BPF
//! crate: `aya` or `libbpf-rs` would bring an ELF loader or a C library for
//! one short program). It is attached to the task's v2 cgroup with
//! `BPF_F_ALLOW_MULTI`, so programs already attached above it (systemd's)
//! keep applying: the kernel allows an access only when every program
//! allows it. It lives as long as the cgroup: removing the task's cgroup
//! frees it, and nothing else needs cleaning up.
//!
//! What it says: for each guarded character-device major (NVIDIA's 195),
//! only the listed minors may be opened or made; everything else is left
//! to the rest of the system (so `/dev/null`, `/dev/zero`, the terminals,
//! `nvidia-uvm` keep working as for any process).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// One guarded major: only `minors` of it may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub major: u32,
    pub minors: Vec<u32>,
}

/// One BPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    pub code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcode parts (linux/bpf_common.h, linux/bpf.h).
const BPF_LDX: u8 = 0x01;
const BPF_ALU64: u8 = 0x07;
const BPF_JMP: u8 = 0x05;
const BPF_W: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_K: u8 = 0x00;
const BPF_AND: u8 = 0x50;
const BPF_MOV: u8 = 0xb0;
const BPF_JEQ: u8 = 0x10;
const BPF_JNE: u8 = 0x50;
const BPF_EXIT: u8 = 0x90;

/// `bpf_cgroup_dev_ctx`: access_type (type | access << 16), major, minor.
const CTX_ACCESS_TYPE: i16 = 0;
const CTX_MAJOR: i16 = 4;
const CTX_MINOR: i16 = 8;
/// `BPF_DEVCG_DEV_CHAR`.
const DEV_CHAR: i32 = 2;

fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
    Insn {
        code: BPF_LDX | BPF_W | BPF_MEM,
        regs: dst | (src << 4),
        off,
        imm: 0,
    }
}

fn alu_k(op: u8, dst: u8, imm: i32) -> Insn {
    Insn {
        code: BPF_ALU64 | op | BPF_K,
        regs: dst,
        off: 0,
        imm,
    }
}

fn jmp_k(op: u8, dst: u8, imm: i32, off: i16) -> Insn {
    Insn {
        code: BPF_JMP | op | BPF_K,
        regs: dst,
        off,
        imm,
    }
}

/// `goto off` (`BPF_JA`).
fn ja(off: i16) -> Insn {
    Insn {
        code: BPF_JMP,
        regs: 0,
        off,
        imm: 0,
    }
}

fn exit() -> Insn {
    Insn {
        code: BPF_JMP | BPF_EXIT,
        regs: 0,
        off: 0,
        imm: 0,
    }
}

/// The program for `guards`: r0 = 1 (allow) unless a character device of
/// a guarded major is not one of its minors (r0 = 0). Pure.
///
/// ```text
///   r2 = ctx.access_type & 0xffff; if r2 != CHAR goto allow
///   r3 = ctx.major; r4 = ctx.minor
///   per guard:  if r3 != MAJOR goto next; if r4 == m goto allow (each m); goto deny
///   allow: r0 = 1; exit          deny: r0 = 0; exit
/// ```
pub fn program(guards: &[Guard]) -> Vec<Insn> {
    // Jumps are patched once the labels' places are known.
    enum To {
        Allow,
        Deny,
        Next,
    }
    let mut code: Vec<(Insn, Option<To>)> = vec![
        (ldx_w(2, 1, CTX_ACCESS_TYPE), None),
        (alu_k(BPF_AND, 2, 0xffff), None),
        (jmp_k(BPF_JNE, 2, DEV_CHAR, 0), Some(To::Allow)),
        (ldx_w(3, 1, CTX_MAJOR), None),
        (ldx_w(4, 1, CTX_MINOR), None),
    ];
    let mut nexts = Vec::new();
    for g in guards {
        let start = code.len();
        code.push((jmp_k(BPF_JNE, 3, g.major as i32, 0), Some(To::Next)));
        for m in &g.minors {
            code.push((jmp_k(BPF_JEQ, 4, *m as i32, 0), Some(To::Allow)));
        }
        code.push((ja(0), Some(To::Deny)));
        nexts.push((start, code.len()));
    }
    let allow = code.len();
    code.push((alu_k(BPF_MOV, 0, 1), None));
    code.push((exit(), None));
    let deny = code.len();
    code.push((alu_k(BPF_MOV, 0, 0), None));
    code.push((exit(), None));
    let mut out = Vec::with_capacity(code.len());
    for (pc, (mut insn, to)) in code.into_iter().enumerate() {
        let target = match to {
            None => None,
            Some(To::Allow) => Some(allow),
            Some(To::Deny) => Some(deny),
            Some(To::Next) => nexts.iter().find(|(s, _)| *s == pc).map(|(_, n)| *n),
        };
        if let Some(t) = target {
            insn.off = (t as i64 - pc as i64 - 1) as i16;
        }
        out.push(insn);
    }
    out
}

// bpf(2) commands and constants (linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct LoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// bpf(2) with `attr` (a `#[repr(C)]` part of `union bpf_attr`).
#[allow(unsafe_code)]
fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised `#[repr(C)]` struct laid out
    // as the kernel's `union bpf_attr` member for `cmd`, and its size is
    // passed with it; the kernel reads at most that many bytes (and any
    // pointers in it point at buffers that outlive the call).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Load `insns` as a device program: its file descriptor. The verifier's
/// log is part of the error when it refuses the program.
pub fn load(insns: &[Insn]) -> Result<OwnedFd, String> {
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut name = [0u8; 16];
    name[..9].copy_from_slice(b"gpu_devcg");
    let attr = LoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..LoadAttr::default()
    };
    match bpf(BPF_PROG_LOAD, &attr) {
        #[allow(unsafe_code)]
        // SAFETY: a successful BPF_PROG_LOAD returns a new file descriptor
        // that nothing else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(0);
            let text = String::from_utf8_lossy(&log[..end]);
            Err(format!(
                "loading the device program: {e}{}",
                if text.trim().is_empty() {
                    String::new()
                } else {
                    format!(" (verifier: {})", text.trim())
                }
            ))
        }
    }
}

/// Attach `prog` to the v2 cgroup folder `cgroup` (`BPF_F_ALLOW_MULTI`).
pub fn attach(prog: &OwnedFd, cgroup: &Path) -> Result<(), String> {
    let dir =
        std::fs::File::open(cgroup).map_err(|e| format!("opening {}: {e}", cgroup.display()))?;
    let attr = AttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    bpf(BPF_PROG_ATTACH, &attr)
        .map(|_| ())
        .map_err(|e| format!("attaching the device program to {}: {e}", cgroup.display()))
}

/// Build, load and attach the program for `guards` to `cgroup`. The
/// program stays attached (and loaded) as long as the cgroup exists.
pub fn guard(cgroup: &Path, guards: &[Guard]) -> Result<(), String> {
    let prog = load(&program(guards))?;
    attach(&prog, cgroup)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run the program on one access, as the kernel would (a tiny
    /// interpreter of the instructions `program` emits).
    fn run(insns: &[Insn], kind: i32, major: u32, minor: u32) -> u64 {
        let ctx = [kind as u32 | (2 << 16), major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        for _ in 0..1000 {
            let i = insns[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            assert_eq!(
                src,
                if i.code == BPF_LDX | BPF_W | BPF_MEM {
                    1
                } else {
                    0
                }
            );
            pc += 1;
            match i.code {
                c if c == BPF_LDX | BPF_W | BPF_MEM => r[dst] = u64::from(ctx[i.off as usize / 4]),
                c if c == BPF_ALU64 | BPF_AND | BPF_K => r[dst] &= i.imm as u64,
                c if c == BPF_ALU64 | BPF_MOV | BPF_K => r[dst] = i.imm as u64,
                c if c == BPF_JMP => pc = (pc as i64 + i64::from(i.off)) as usize,
                c if c == BPF_JMP | BPF_JEQ | BPF_K => {
                    if r[dst] == i.imm as u64 {
                        pc = (pc as i64 + i64::from(i.off)) as usize;
                    }
                }
                c if c == BPF_JMP | BPF_JNE | BPF_K => {
                    if r[dst] != i.imm as u64 {
                        pc = (pc as i64 + i64::from(i.off)) as usize;
                    }
                }
                c if c == BPF_JMP | BPF_EXIT => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
        panic!("no exit");
    }

    #[test]
    fn only_the_listed_minors_of_a_guarded_major() {
        let p = program(&[Guard {
            major: 195,
            minors: vec![1, 255, 254],
        }]);
        assert_eq!(run(&p, DEV_CHAR, 195, 1), 1, "own GPU");
        assert_eq!(run(&p, DEV_CHAR, 195, 255), 1, "nvidiactl");
        assert_eq!(run(&p, DEV_CHAR, 195, 0), 0, "another GPU");
        assert_eq!(run(&p, DEV_CHAR, 195, 7), 0, "another GPU");
        assert_eq!(run(&p, DEV_CHAR, 1, 3), 1, "/dev/null");
        assert_eq!(run(&p, DEV_CHAR, 510, 0), 1, "nvidia-uvm");
        assert_eq!(run(&p, 1, 195, 0), 1, "a block device of that major");
    }

    #[test]
    fn several_guards_and_none() {
        let p = program(&[
            Guard {
                major: 1,
                minors: vec![5],
            },
            Guard {
                major: 195,
                minors: vec![],
            },
        ]);
        assert_eq!(run(&p, DEV_CHAR, 1, 5), 1);
        assert_eq!(run(&p, DEV_CHAR, 1, 3), 0);
        assert_eq!(run(&p, DEV_CHAR, 195, 0), 0);
        assert_eq!(run(&p, DEV_CHAR, 4, 1), 1);
        let open = program(&[]);
        assert_eq!(run(&open, DEV_CHAR, 195, 0), 1);
    }
}
