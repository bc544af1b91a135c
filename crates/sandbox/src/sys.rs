//! The only module with `unsafe`: thin, typed wrappers over the system calls the sandbox
//! needs. Each wrapper converts the C return convention into `io::Result` and says, in a
//! SAFETY comment, why the call cannot violate Rust's memory rules. Policy decisions
//! never live here.

#![allow(unsafe_code, clippy::cast_possible_truncation)]

use crate::seccomp::Insn;
use std::ffi::{CStr, CString};
use std::io;
use std::mem::{size_of, zeroed, MaybeUninit};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_int(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path contains NUL: {s:?}"),
        )
    })
}

/// Fork-like clone into new namespaces. Returns `Ok(None)` in the child.
///
/// The caller must be single-threaded: the child starts with a copy of only the calling
/// thread, so locks held by other threads (the allocator's, stdio's) would never be
/// released. `ironcage run` forks before it starts any thread.
pub fn clone_fork(ns_flags: libc::c_int) -> io::Result<Option<i32>> {
    // SAFETY: raw clone with a NULL stack behaves like fork(2): the child continues on a
    // copy of this thread's stack. No pointers are passed (parent_tid/child_tid/tls NULL).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (ns_flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match check(ret)? {
        0 => Ok(None),
        pid => Ok(Some(pid as i32)),
    }
}

/// fork(2). Same single-thread caveat as `clone_fork`.
pub fn fork() -> io::Result<Option<i32>> {
    clone_fork(0)
}

pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid array of two ints for the kernel to fill.
    check_int(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid array of two ints for the kernel to fill.
    check_int(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: socketpair succeeded, so both descriptors are open and unowned.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is a valid readable slice of buf.len() bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is a valid writable slice of buf.len() bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

pub fn mount(
    src: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let src = src.map(cstr).transpose()?;
    let target = cstr(target)?;
    let fstype = fstype.map(cstr).transpose()?;
    let data = data.map(cstr).transpose()?;
    let p = |c: &Option<CString>| c.as_ref().map_or(ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is NULL or a NUL-terminated string that outlives the call.
    check_int(unsafe {
        libc::mount(p(&src), target.as_ptr(), p(&fstype), flags, p(&data).cast())
    })?;
    Ok(())
}

pub const OPEN_TREE_CLONE: libc::c_uint = 1;
pub const AT_RECURSIVE: libc::c_uint = 0x8000;
pub const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Opens a path as O_PATH without following any symlink in any component (openat2
/// RESOLVE_NO_SYMLINKS), so a link planted by an earlier sandbox cannot redirect us.
pub fn open_path_nofollow(path: &str) -> io::Result<OwnedFd> {
    openat2_nofollow(
        &cstr(path)?,
        libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        0,
    )
}

/// openat2(AT_FDCWD, path, flags, mode) refusing every symlink and magic link on the way.
fn openat2_nofollow(path: &CStr, flags: libc::c_int, mode: u64) -> io::Result<OwnedFd> {
    // SAFETY: open_how is plain data; zeroed is a valid value.
    let mut how: libc::open_how = unsafe { zeroed() };
    how.flags = flags as u64;
    how.mode = mode;
    how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: path is NUL-terminated; how is a valid open_how of the size passed.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            path.as_ptr(),
            &how as *const libc::open_how,
            size_of::<libc::open_how>(),
        )
    })?;
    // SAFETY: openat2 returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Opens a path as O_PATH, following symlinks (administrator-chosen immutable paths).
pub fn open_path(path: &str) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: c is NUL-terminated.
    let fd = check_int(unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) })?;
    // SAFETY: open returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Clones the mount tree at `fd` into a detached mount (open_tree OPEN_TREE_CLONE).
pub fn open_tree_clone(fd: &OwnedFd, recursive: bool) -> io::Result<OwnedFd> {
    let empty = c"";
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as libc::c_uint
        | libc::AT_EMPTY_PATH as libc::c_uint
        | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: fd is open; the path is an empty NUL-terminated string (AT_EMPTY_PATH).
    let ret = check(unsafe {
        libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), empty.as_ptr(), flags)
    })?;
    // SAFETY: open_tree returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// Sets mount attributes (read-only, nosuid, ...) on a mount fd, recursively.
pub fn mount_setattr_fd(fd: &OwnedFd, set: u64, clear: u64) -> io::Result<()> {
    setattr(
        fd.as_raw_fd(),
        c"",
        libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
        set,
        clear,
    )
}

/// Sets mount attributes on the mount at `path`, not recursively.
pub fn mount_setattr_path(path: &str, set: u64, clear: u64) -> io::Result<()> {
    let c = cstr(path)?;
    setattr(libc::AT_FDCWD, &c, 0, set, clear)
}

fn setattr(dirfd: RawFd, path: &CStr, flags: libc::c_uint, set: u64, clear: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: path is NUL-terminated; attr is a valid mount_attr of the size passed.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            size_of::<MountAttr>(),
        )
    })?;
    Ok(())
}

/// Attaches a detached mount at `target`.
pub fn move_mount_to(fd: &OwnedFd, target: &str) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: fd is open; both paths are NUL-terminated strings outliving the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })?;
    Ok(())
}

pub fn pivot_root(new_root: &str, put_old: &str) -> io::Result<()> {
    let (n, o) = (cstr(new_root)?, cstr(put_old)?);
    // SAFETY: both are NUL-terminated strings.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) })?;
    Ok(())
}

pub fn umount_detach(path: &str) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: c is NUL-terminated.
    check_int(unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) })?;
    Ok(())
}

pub fn chdir(path: &str) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: c is NUL-terminated.
    check_int(unsafe { libc::chdir(c.as_ptr()) })?;
    Ok(())
}

pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe name's bytes.
    check_int(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })?;
    Ok(())
}

pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare takes only flags.
    check_int(unsafe { libc::unshare(flags) })?;
    Ok(())
}

pub fn setsid() -> io::Result<()> {
    // SAFETY: no arguments.
    check_int(unsafe { libc::setsid() })?;
    Ok(())
}

fn prctl(op: libc::c_int, a: libc::c_ulong, b: libc::c_ulong) -> io::Result<()> {
    // SAFETY: every prctl option used here takes integer arguments only.
    check_int(unsafe { libc::prctl(op, a, b, 0 as libc::c_ulong, 0 as libc::c_ulong) })?;
    Ok(())
}

pub fn set_no_new_privs() -> io::Result<()> {
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0)
}

pub fn set_parent_death_signal(sig: libc::c_int) -> io::Result<()> {
    prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0)
}

pub fn set_dumpable(on: bool) -> io::Result<()> {
    prctl(libc::PR_SET_DUMPABLE, on as libc::c_ulong, 0)
}

pub fn set_child_subreaper() -> io::Result<()> {
    prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0)
}

pub fn set_name(name: &CStr) {
    // SAFETY: name is NUL-terminated and PR_SET_NAME reads at most 16 bytes of it.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

/// Highest capability number the running kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Drops every capability not in `keep` from the bounding set, sets the permitted,
/// effective and inheritable sets to `keep`, and raises `keep` as ambient so the
/// capabilities survive execve of an ordinary (non-root, no file caps) program.
pub fn restrict_capabilities(keep: &[u8]) -> io::Result<()> {
    for cap in 0..=last_cap() {
        if !keep.contains(&(cap as u8)) {
            prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0)?;
        }
    }
    // Clear ambient first so nothing inherited survives.
    prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        0,
    )?;
    let mut mask = [0u32; 2];
    for &c in keep {
        mask[(c / 32) as usize] |= 1 << (c % 32);
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522,
        pid: 0,
    }; // _LINUX_CAPABILITY_VERSION_3
    let data = [0, 1].map(|i| Data {
        effective: mask[i],
        permitted: mask[i],
        inheritable: mask[i],
    });
    // SAFETY: header and data are valid capset v3 structures (two data words).
    check(unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) })?;
    for &c in keep {
        prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
            c as libc::c_ulong,
        )?;
    }
    Ok(())
}

pub fn setrlimit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: lim is a valid rlimit.
    check_int(unsafe { libc::setrlimit(resource, &lim) })?;
    Ok(())
}

pub fn getrlimit(resource: libc::__rlimit_resource_t) -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid rlimit for the kernel to fill.
    check_int(unsafe { libc::getrlimit(resource, &mut lim) })?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

pub fn close_range(first: u32, last: u32) -> io::Result<()> {
    if first > last {
        return Ok(());
    }
    // SAFETY: close_range takes integers; closing descriptors we may not "own" in the Rust
    // sense is the point (this runs just before exec, nothing uses them afterwards).
    check_int(unsafe { libc::close_range(first, last, 0) })?;
    Ok(())
}

/// dup3 with O_CLOEXEC onto a fixed number.
pub fn dup_to(fd: RawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: dup3 takes integers.
    check_int(unsafe { libc::dup3(fd, target, libc::O_CLOEXEC) })?;
    Ok(())
}

/// Installs a seccomp filter. With `listener`, also returns the user-notification fd.
pub fn install_seccomp(prog: &[Insn], listener: bool) -> io::Result<Option<RawFd>> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    let flags = if listener {
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
    } else {
        0
    };
    // SAFETY: Insn is layout-compatible with sock_filter (repr(C), same fields); fprog
    // points at prog, which outlives the call. The kernel copies the program.
    let ret = check(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    })?;
    Ok(listener.then_some(ret as RawFd))
}

/// A msghdr carrying one data byte (`iov`) and room for one SCM_RIGHTS descriptor in
/// `cbuf` (CMSG_SPACE(sizeof(int)) is 24 on x86_64; u64s keep it aligned).
fn one_byte_msghdr(iov: &mut libc::iovec, cbuf: &mut [u64; 4]) -> libc::msghdr {
    // SAFETY: msghdr is plain data; zeroed is a valid initial state.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 4]>();
    msg
}

/// Sends one descriptor over a unix socket (SCM_RIGHTS). Does not allocate.
pub fn send_fd(sock: RawFd, fd: RawFd) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cbuf = [0u64; 4];
    let mut msg = one_byte_msghdr(&mut iov, &mut cbuf);
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
    // SAFETY: msg_control points at a buffer at least CMSG_SPACE(4) bytes long, so the
    // first header and its data fit; the macros only compute addresses within it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize;
        ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    // SAFETY: msg and everything it points to are alive for the call.
    check(unsafe { libc::sendmsg(sock, &msg, 0) } as libc::c_long)?;
    Ok(())
}

/// Receives one descriptor sent with `send_fd`; `Ok(None)` when the peer closed.
pub fn recv_fd(sock: RawFd) -> io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cbuf = [0u64; 4];
    let mut msg = one_byte_msghdr(&mut iov, &mut cbuf);
    loop {
        // SAFETY: msg points at live buffers of the sizes it declares.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(None);
        }
        break;
    }
    // SAFETY: the kernel filled msg_control; CMSG_FIRSTHDR checks msg_controllen.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Ok(None);
        }
        let fd = ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
        Ok(Some(OwnedFd::from_raw_fd(fd)))
    }
}

/// One pending seccomp notification: who made which call.
#[derive(Debug, Clone, Copy)]
pub struct Notification {
    pub id: u64,
    pub pid: u32,
    pub nr: i32,
    pub args: [u64; 6],
}

pub fn notif_recv(fd: RawFd) -> io::Result<Notification> {
    let mut n: MaybeUninit<libc::seccomp_notif> = MaybeUninit::zeroed();
    // SAFETY: n is a zeroed seccomp_notif (the kernel requires it zeroed) of the size the
    // ioctl number encodes.
    check_int(unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV as _, n.as_mut_ptr()) })?;
    // SAFETY: the ioctl succeeded and filled the structure.
    let n = unsafe { n.assume_init() };
    Ok(Notification {
        id: n.id,
        pid: n.pid,
        nr: n.data.nr,
        args: n.data.args,
    })
}

/// Answers a notification: the call fails with `errno` in the sandboxed process.
pub fn notif_fail(fd: RawFd, id: u64, errno: i32) -> io::Result<()> {
    notif_send(
        fd,
        libc::seccomp_notif_resp {
            id,
            val: 0,
            error: -errno,
            flags: 0,
        },
    )
}

fn notif_send(fd: RawFd, resp: libc::seccomp_notif_resp) -> io::Result<()> {
    // SAFETY: resp is a valid seccomp_notif_resp.
    check_int(unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND as _, &resp) })?;
    Ok(())
}

/// Replaces the process image. Returns only on failure.
pub fn execve(
    path: &CStr,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> io::Error {
    // SAFETY: argv and envp are NULL-terminated arrays of pointers to NUL-terminated
    // strings that the caller keeps alive across the call.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and skips atexit handlers, which a forked child must not
    // run (they belong to the parent's state).
    unsafe { libc::_exit(code) }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Rusage {
    pub user_us: u64,
    pub system_us: u64,
    pub max_rss_kib: u64,
}

/// waitpid with rusage. Returns (pid, raw status).
pub fn wait4(pid: i32, flags: libc::c_int) -> io::Result<(i32, i32, Rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain data; zeroed is valid.
    let mut ru: libc::rusage = unsafe { zeroed() };
    loop {
        // SAFETY: status and ru are valid for the kernel to write.
        let r = unsafe { libc::wait4(pid, &mut status, flags, &mut ru) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        return Ok((
            r,
            status,
            Rusage {
                user_us: tv(ru.ru_utime),
                system_us: tv(ru.ru_stime),
                max_rss_kib: ru.ru_maxrss as u64,
            },
        ));
    }
}

pub fn kill(pid: i32, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes integers.
    check_int(unsafe { libc::kill(pid, sig) })?;
    Ok(())
}

pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes integers.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// poll(2) on (fd, events) pairs; returns revents per entry. `timeout_ms` < 0 waits forever.
pub fn poll(fds: &[(RawFd, i16)], timeout_ms: i32) -> io::Result<Vec<i16>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, events)| libc::pollfd {
            fd,
            events,
            revents: 0,
        })
        .collect();
    // SAFETY: p is a valid array of p.len() pollfd structures.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(p.iter().map(|x| x.revents).collect())
}

pub fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { zeroed() };
    // SAFETY: set is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in signals {
        // SAFETY: set is initialised; s is a signal number.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    set
}

/// Sets the signal mask (SIG_SETMASK); returns the old one.
pub fn set_sigmask(set: &libc::sigset_t) -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data.
    let mut old: libc::sigset_t = unsafe { zeroed() };
    // SAFETY: both pointers are valid sigset_t.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, set, &mut old) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(old)
}

pub fn signalfd(set: &libc::sigset_t) -> io::Result<OwnedFd> {
    // SAFETY: set is a valid sigset_t.
    let fd = check_int(unsafe { libc::signalfd(-1, set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;
    // SAFETY: a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads one pending signal number from a signalfd, if any.
pub fn signalfd_read(fd: RawFd) -> Option<i32> {
    let mut info = MaybeUninit::<libc::signalfd_siginfo>::zeroed();
    // SAFETY: info is writable and exactly one siginfo long.
    let n = unsafe {
        libc::read(
            fd,
            info.as_mut_ptr().cast(),
            size_of::<libc::signalfd_siginfo>(),
        )
    };
    if n as usize != size_of::<libc::signalfd_siginfo>() {
        return None;
    }
    // SAFETY: the kernel filled the whole structure.
    Some(unsafe { info.assume_init() }.ssi_signo as i32)
}

/// Resets every catchable signal to its default disposition (before exec of the workload,
/// so nothing inherited from the supervisor, e.g. an ignored SIGPIPE, leaks in).
pub fn reset_signal_dispositions() {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL is always a valid disposition.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// Brings the loopback interface up in the current network namespace.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: socket takes integers.
    let s = check_int(unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
    })?;
    // SAFETY: s is a new descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: ifreq is plain data; zeroed is valid.
    let mut req: libc::ifreq = unsafe { zeroed() };
    for (i, b) in b"lo\0".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as i16;
    // SAFETY: req is a valid ifreq naming "lo".
    check_int(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })?;
    Ok(())
}

/// A TCP socket listening on 127.0.0.1:`port` in the current network namespace. Raw
/// system calls only: init runs this after a fork-like clone, where allocating could
/// deadlock on a lock another thread of the supervisor held.
pub fn listen_loopback(port: u16) -> io::Result<OwnedFd> {
    // SAFETY: socket takes integers.
    let s = check_int(unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)
    })?;
    // SAFETY: s is a new descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(s) };
    let one: libc::c_int = 1;
    // SAFETY: the option value points at a live c_int of the size given.
    check_int(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    // SAFETY: sockaddr_in is plain data; zeroed is valid.
    let mut addr: libc::sockaddr_in = unsafe { zeroed() };
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_port = port.to_be();
    addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
    // SAFETY: addr is a valid sockaddr_in and its size is given.
    check_int(unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })?;
    // SAFETY: plain integers on a descriptor we own.
    check_int(unsafe { libc::listen(sock.as_raw_fd(), 1024) })?;
    Ok(sock)
}

pub fn getuid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::getuid() }
}

pub fn getgid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::getgid() }
}

pub fn geteuid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() }
}

pub fn getpid() -> i32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::getpid() }
}

/// fchown on an O_PATH-free fd-less path without following a final symlink.
pub fn lchown(path: &str, uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: c is NUL-terminated.
    check_int(unsafe { libc::lchown(c.as_ptr(), uid, gid) })?;
    Ok(())
}

/// Landlock ABI version of the running kernel, 0 if unsupported.
pub fn landlock_abi() -> i32 {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) only
    // returns the ABI version; no pointer is dereferenced.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    if r < 0 {
        0
    } else {
        r as i32
    }
}

pub fn is_fd_open(fd: RawFd) -> bool {
    // SAFETY: fcntl F_GETFD takes integers.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

pub fn raw_status_exit(status: i32) -> Option<i32> {
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

pub fn raw_status_signal(status: i32) -> Option<i32> {
    libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
}

pub fn signal_name(sig: i32) -> String {
    let names = [
        "",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    names
        .get(sig as usize)
        .filter(|n| !n.is_empty())
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("SIG{sig}"))
}

/// Waits for one of the (blocked) signals in `set`; returns its number.
pub fn sigwait(set: &libc::sigset_t) -> i32 {
    loop {
        // SAFETY: siginfo_t is plain data; zeroed is valid.
        let mut info: libc::siginfo_t = unsafe { zeroed() };
        // SAFETY: set and info are valid for the call.
        let r = unsafe { libc::sigwaitinfo(set, &mut info) };
        if r > 0 {
            return r;
        }
    }
}

pub fn symlink(target: &str, link: &str) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

/// Writes `data` to a file under /proc/<pid>/ (uid_map, gid_map, setgroups).
pub fn write_proc(pid: i32, file: &str, data: &str) -> io::Result<()> {
    std::fs::write(format!("/proc/{pid}/{file}"), data)
}

pub fn access_exec(path: &CStr) -> bool {
    // SAFETY: path is NUL-terminated.
    unsafe { libc::access(path.as_ptr(), libc::X_OK) == 0 }
}

/// The primary gid of a uid from /etc/passwd, or the uid itself.
pub fn getgid_of(uid: u32) -> u32 {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.get(2).and_then(|u| u.parse::<u32>().ok()) == Some(uid))
                    .then(|| f.get(3).and_then(|g| g.parse().ok()))
                    .flatten()
            })
        })
        .unwrap_or(uid)
}

/// Sets real, effective and saved ids (gid first, while we still may).
pub fn set_ids(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: setresgid/setresuid take integers.
    check_int(unsafe { libc::setresgid(gid, gid, gid) })?;
    // SAFETY: as above.
    check_int(unsafe { libc::setresuid(uid, uid, uid) })?;
    Ok(())
}

/// Zeroes this process's original argv and environment strings, so /proc/<pid>/cmdline and
/// /proc/<pid>/environ of our init (a fork of the supervisor) show nothing of the host's
/// command line or environment to the sandbox. Rust's std keeps its own copies.
pub fn scrub_process_strings() {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the ")" that closes comm; arg_start is field 48 (1-based) overall.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return;
    };
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // rest starts at field 3, so field N is f[N - 3].
    let (arg_start, arg_end, env_start, env_end) = (f.get(45), f.get(46), f.get(47), f.get(48));
    for (start, end) in [(arg_start, arg_end), (env_start, env_end)] {
        if let (Some(&s), Some(&e)) = (start, end) {
            if s != 0 && e > s && e - s < (1 << 24) {
                // SAFETY: the kernel reports [s, e) as this process's own argv/environ
                // area at the top of the main thread's stack: mapped, writable, and not
                // referenced by Rust (std copied what it needed at startup).
                unsafe { ptr::write_bytes(s as *mut u8, 0, (e - s) as usize) };
            }
        }
    }
}

/// SECCOMP_GET_NOTIF_SIZES succeeds on kernels with user notification (5.0+).
pub fn seccomp_user_notif_supported() -> bool {
    let mut sizes = [0u16; 3];
    // SAFETY: SECCOMP_GET_NOTIF_SIZES writes three u16 into the buffer we pass.
    let r = unsafe { libc::syscall(libc::SYS_seccomp, 3, 0, sizes.as_mut_ptr()) };
    r == 0
}

pub fn access_write(p: &std::path::Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: c is NUL-terminated.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// Runs `f` in a new process that shares our memory and suspends us until it execs or
/// exits (CLONE_VM | CLONE_VFORK, as glibc's posix_spawn does). Much cheaper than fork: no
/// page tables are copied, which is most of the cost of starting the workload.
///
/// `f` must end in execve or `exit_now`, never return into our frames, and capture only
/// plain values or references: it runs on its own stack but on our heap, and what it moves
/// out of its captures is never dropped here.
pub fn spawn_shared<F: FnOnce() -> libc::c_int>(f: F) -> io::Result<i32> {
    extern "C" fn trampoline<F: FnOnce() -> libc::c_int>(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` points at the `Option<F>` in spawn_shared's frame, which stays alive
        // because CLONE_VFORK suspends that frame's thread until we exec or exit.
        let slot = unsafe { &mut *arg.cast::<Option<F>>() };
        match slot.take() {
            Some(f) => f(),
            None => 127,
        }
    }
    // The child's stack: 1 MiB with an inaccessible guard page below it, so an overflow
    // faults instead of running into init's heap (which the child shares).
    const STACK: usize = 1 << 20;
    const GUARD: usize = 4096;
    // SAFETY: an anonymous private mapping; no existing memory is touched.
    let base = unsafe {
        libc::mmap(
            ptr::null_mut(),
            STACK + GUARD,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the first page of the mapping we just made.
    unsafe { libc::mprotect(base, GUARD, libc::PROT_NONE) };
    // SAFETY: the end of the mapping, 16-byte aligned (mmap returns page-aligned memory).
    let top = unsafe { base.cast::<u8>().add(STACK + GUARD) }.cast::<libc::c_void>();
    let mut slot = Some(f);
    // SAFETY: `top` is the end of a mapping used only as the child's stack; the
    // trampoline's argument outlives the child's use of it (see above).
    let pid = unsafe {
        libc::clone(
            trampoline::<F>,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut slot as *mut Option<F>).cast(),
        )
    };
    let err = (pid < 0).then(io::Error::last_os_error);
    // SAFETY: CLONE_VFORK returned, so the child has exec'd or exited: its stack is unused.
    unsafe { libc::munmap(base, STACK + GUARD) };
    match err {
        Some(e) => Err(e),
        None => Ok(pid),
    }
}

pub fn close(fd: RawFd) {
    // SAFETY: closing a descriptor number has no memory-safety preconditions.
    unsafe { libc::close(fd) };
}

/// Lets a notified call proceed unchanged (SECCOMP_USER_NOTIF_FLAG_CONTINUE). Only for
/// calls we inspect to report on; enforcement never depends on what we read.
pub fn notif_continue(fd: RawFd, id: u64) -> io::Result<()> {
    notif_send(
        fd,
        libc::seccomp_notif_resp {
            id,
            val: 0,
            error: 0,
            flags: 1,
        },
    )
}

/// Reads up to `buf.len()` bytes at `addr` in process `pid` (process_vm_readv).
pub fn read_process_memory(pid: i32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes our writable buffer; the kernel validates the remote range
    // and only copies into `buf`.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `struct clone_args` of clone3(2), version 2 (with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Fork-like clone3 into new namespaces, born inside the cgroup v2 directory `cgroup_dir`
/// (CLONE_INTO_CGROUP, Linux 5.7+). Unlike moving a process afterwards, this never waits
/// for an RCU grace period. Returns `Ok(None)` in the child. Same single-thread caveat as
/// `clone_fork`.
pub fn clone_into_cgroup(ns_flags: libc::c_int, cgroup_dir: &OwnedFd) -> io::Result<Option<i32>> {
    let args = CloneArgs {
        flags: ns_flags as u32 as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup_dir.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: args is a valid clone_args of the size passed; with stack 0 the child runs
    // on a copy of our stack, like fork(2); no pointers besides `args` are passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            size_of::<CloneArgs>(),
        )
    };
    match check(ret)? {
        0 => Ok(None),
        pid => Ok(Some(pid as i32)),
    }
}

/// Opens a directory as O_PATH (for CLONE_INTO_CGROUP).
pub fn open_dir(path: &std::path::Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: c is NUL-terminated.
    let fd = check_int(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether a notification is still pending (its caller alive and waiting): checked after
/// reading the caller's memory, so a pid reused in between is not misread as the caller.
pub fn notif_id_valid(fd: RawFd, id: u64) -> bool {
    // SAFETY: the ioctl reads one u64 from the pointer we pass.
    unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_ID_VALID as _, &id) == 0 }
}

/// File status flags and, for a terminal, its settings: what a sandbox sharing our stdio
/// could change (O_NONBLOCK on a shared pipe, echo off on the terminal). Restored after.
pub struct StdioState {
    flags: [Option<libc::c_int>; 3],
    termios: [Option<libc::termios>; 3],
}

pub fn save_stdio() -> StdioState {
    let mut st = StdioState {
        flags: [None; 3],
        termios: [None; 3],
    };
    for fd in 0..3 {
        // SAFETY: fcntl F_GETFL takes integers.
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        st.flags[fd as usize] = (fl >= 0).then_some(fl);
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        let mut t: libc::termios = unsafe { zeroed() };
        // SAFETY: t is a valid termios for the call to fill.
        if unsafe { libc::tcgetattr(fd, &mut t) } == 0 {
            st.termios[fd as usize] = Some(t);
        }
    }
    st
}

pub fn restore_stdio(st: &StdioState) {
    for fd in 0..3 {
        if let Some(fl) = st.flags[fd as usize] {
            // SAFETY: fcntl F_SETFL takes integers.
            unsafe { libc::fcntl(fd, libc::F_SETFL, fl) };
        }
        if let Some(t) = &st.termios[fd as usize] {
            // Only when changed: tcsetattr from a background process group would stop us
            // with SIGTTOU (`ironcage run ... &` on a terminal).
            // SAFETY: termios is plain data; tcgetattr fills it or fails.
            let mut now: libc::termios = unsafe { zeroed() };
            // SAFETY: now is valid for tcgetattr to fill.
            let same = unsafe { libc::tcgetattr(fd, &mut now) } == 0
                && now.c_iflag == t.c_iflag
                && now.c_oflag == t.c_oflag
                && now.c_cflag == t.c_cflag
                && now.c_lflag == t.c_lflag
                && now.c_cc == t.c_cc;
            if !same {
                // SAFETY: t is the termios read from this descriptor before the run.
                unsafe { libc::tcsetattr(fd, libc::TCSANOW, t) };
            }
        }
    }
}

/// Opens a file for writing without following any symlink on the way (openat2
/// RESOLVE_NO_SYMLINKS): reports and audit logs may sit where a sandbox planted links.
pub fn create_nofollow(path: &std::path::Path, append: bool) -> io::Result<std::fs::File> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mode = if append {
        libc::O_APPEND
    } else {
        libc::O_TRUNC
    };
    let fd = openat2_nofollow(
        &c,
        libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOFOLLOW | mode,
        0o644,
    )?;
    Ok(std::fs::File::from(fd))
}

/// Reserves disk blocks for `len` bytes after `offset` without changing the file's size
/// (FALLOC_FL_KEEP_SIZE): later writes there cannot fail for lack of space. Used for the
/// audit log, so a sandbox that fills the disk cannot keep its run from being recorded.
pub fn fallocate_keep_size(file: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate takes a descriptor we borrow for the call and plain integers.
    check_int(unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    })
    .map(|_| ())
}

pub fn isatty(fd: RawFd) -> bool {
    // SAFETY: isatty takes an integer.
    unsafe { libc::isatty(fd) == 1 }
}

/// A new pty pair sized like `size_from`'s terminal: (master, slave). The master is
/// close-on-exec and non-blocking; the slave is handed to the sandbox.
pub fn openpty_like(size_from: RawFd) -> io::Result<(OwnedFd, OwnedFd)> {
    let (mut m, mut s) = (0, 0);
    // SAFETY: winsize is plain data; the ioctl fills it or fails (then zeros are fine).
    let mut ws: libc::winsize = unsafe { zeroed() };
    // SAFETY: ws is a valid winsize for TIOCGWINSZ to fill.
    unsafe { libc::ioctl(size_from, libc::TIOCGWINSZ, &mut ws) };
    // SAFETY: m and s receive descriptors; name and termios are NULL; ws is valid.
    check_int(unsafe { libc::openpty(&mut m, &mut s, ptr::null_mut(), ptr::null(), &ws) })?;
    // SAFETY: openpty returned two new descriptors we now own.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
    // SAFETY: fcntl takes integers.
    unsafe {
        libc::fcntl(m, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(
            m,
            libc::F_SETFL,
            libc::fcntl(m, libc::F_GETFL) | libc::O_NONBLOCK,
        );
    }
    Ok((master, slave))
}

/// Copies the terminal size of `from` onto the pty `to` (the kernel then sends SIGWINCH
/// to the pty's foreground process group).
pub fn copy_winsize(from: RawFd, to: RawFd) {
    // SAFETY: winsize is plain data.
    let mut ws: libc::winsize = unsafe { zeroed() };
    // SAFETY: ws is valid for both ioctls.
    unsafe {
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Puts a terminal in raw mode (its previous settings are restored by `restore_stdio`).
pub fn make_raw(fd: RawFd) {
    // SAFETY: termios is plain data; tcgetattr fills it or fails.
    let mut t: libc::termios = unsafe { zeroed() };
    // SAFETY: t is valid for the calls.
    unsafe {
        if libc::tcgetattr(fd, &mut t) == 0 {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(fd, libc::TCSANOW, &t);
        }
    }
}

/// Makes `fd` (a tty) the controlling terminal of our new session.
pub fn set_controlling_tty(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument.
    check_int(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) })?;
    Ok(())
}

/// One write(2); returns how much was written.
pub fn write_partial(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid readable slice of buf.len() bytes.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// dup2 without close-on-exec (for the standard descriptors).
pub fn dup2(fd: RawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 takes integers.
    check_int(unsafe { libc::dup2(fd, target) })?;
    Ok(())
}

/// Opens a new pty on the devpts instance behind `/dev/ptmx` (in the sandbox's own /dev):
/// (master, slave), the slave opened from the master (TIOCGPTPEER), both without becoming
/// our controlling terminal.
pub fn open_pty_here() -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: the path is a NUL-terminated literal.
    let m = check_int(unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: a new descriptor we now own.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int.
    check_int(unsafe { libc::ioctl(m, libc::TIOCSPTLCK, &unlock) })?;
    // SAFETY: TIOCGPTPEER takes open flags and returns a new descriptor.
    let s = check_int(unsafe { libc::ioctl(m, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY) })?;
    // SAFETY: a new descriptor we now own.
    Ok((master, unsafe { OwnedFd::from_raw_fd(s) }))
}

pub fn set_nonblocking_cloexec(fd: RawFd) {
    // SAFETY: fcntl takes integers.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(
            fd,
            libc::F_SETFL,
            libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK,
        );
    }
}

/// Whether we are in the foreground process group of the terminal on `fd`.
pub fn in_foreground(fd: RawFd) -> bool {
    // SAFETY: tcgetpgrp and getpgrp take integers / nothing.
    unsafe { libc::tcgetpgrp(fd) == libc::getpgrp() }
}

/// An anonymous in-memory file holding `data`, positioned at its start: a held sandbox's
/// stdin, so a large stdin never blocks the writer the way a pipe would.
pub fn memfd_with(name: &CStr, data: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: name is NUL-terminated; the returned descriptor is new and owned here.
    let fd = check_int(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) })?;
    // SAFETY: fd was just returned by memfd_create and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    write_all(fd.as_raw_fd(), data)?;
    // SAFETY: lseek on our own descriptor.
    check(unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_SET) })?;
    Ok(fd)
}

/// Reads exactly `buf.len()` bytes (a blocking pipe or socket); EOF first is an error.
pub fn read_exact(fd: RawFd, mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match read(fd, buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Points the given descriptors (of 0, 1, 2) at /dev/null, closing what they were (pipes
/// whose readers then see end-of-file without waiting for us to exit).
pub fn null_stdio(fds: &[RawFd]) -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    fds.iter().try_for_each(|fd| dup2(null.as_raw_fd(), *fd))
}

/// Sends `sig` to the process behind a pidfd (no pid-reuse race).
pub fn pidfd_send_signal(pidfd: RawFd, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: pidfd_send_signal takes integers and a null siginfo.
    check(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            sig,
            ptr::null::<libc::siginfo_t>(),
            0,
        )
    })?;
    Ok(())
}
