//! A pty between the caller's terminal and the sandbox, used when stdin and stdout are a
//! terminal. The sandbox's init opens it on the sandbox's own devpts and hands the master
//! over (`child.rs`); here the supervisor relays it: the sandbox gets a terminal of its own (job control, `tty`, raw mode all work)
//! and never touches the caller's. The supervisor relays bytes both ways and passes on
//! window-size changes. The caller's terminal is put in raw mode for the run (keys such as
//! ^C then reach the sandbox's terminal) and restored afterwards with the rest of stdio.

use crate::sys;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

pub struct Relay {
    master: OwnedFd,
    /// Bytes read from our stdin, not yet accepted by the pty.
    to_pty: Vec<u8>,
    /// Bytes read from the pty, not yet accepted by our stdout.
    to_out: Vec<u8>,
    stdin_open: bool,
    pty_open: bool,
}

const CHUNK: usize = 16 * 1024;

impl Relay {
    /// Takes the master of the pty the sandbox's init opened on its own devpts (so the
    /// names under the sandbox's /dev/pts are right) and sizes it like our terminal.
    pub fn from_master(master: OwnedFd) -> Relay {
        sys::set_nonblocking_cloexec(master.as_raw_fd());
        sys::copy_winsize(0, master.as_raw_fd());
        Relay {
            master,
            to_pty: Vec::new(),
            to_out: Vec::new(),
            stdin_open: true,
            pty_open: true,
        }
    }

    pub fn master_fd(&self) -> RawFd {
        self.master.as_raw_fd()
    }

    /// Descriptors to poll, with their events. `handle` takes the revents in this order.
    pub fn poll_set(&self) -> Vec<(RawFd, i16)> {
        let mut pty_events = 0;
        if self.pty_open && self.to_out.len() < CHUNK {
            pty_events |= libc::POLLIN;
        }
        if self.pty_open && !self.to_pty.is_empty() {
            pty_events |= libc::POLLOUT;
        }
        let stdin_events = if self.stdin_open && self.to_pty.len() < CHUNK {
            libc::POLLIN
        } else {
            0
        };
        let out_events = if self.to_out.is_empty() {
            0
        } else {
            libc::POLLOUT
        };
        vec![
            (0, stdin_events),
            (self.master.as_raw_fd(), pty_events),
            (1, out_events),
        ]
    }

    pub fn handle(&mut self, rev: &[i16]) {
        let mut buf = [0u8; CHUNK];
        if rev[0] & (libc::POLLIN | libc::POLLHUP) != 0 {
            match sys::read(0, &mut buf) {
                Ok(0) | Err(_) => self.stdin_open = false,
                Ok(n) => self.to_pty.extend_from_slice(&buf[..n]),
            }
        }
        if rev[1] & libc::POLLIN != 0 {
            self.read_pty(&mut buf);
        } else if rev[1] & (libc::POLLHUP | libc::POLLERR) != 0 {
            // The sandbox closed its side: read what is left, then stop.
            self.read_pty(&mut buf);
            self.pty_open = false;
        }
        if rev[1] & libc::POLLOUT != 0 {
            if let Ok(n) = write_some(self.master.as_raw_fd(), &self.to_pty) {
                self.to_pty.drain(..n);
            }
        }
        if rev[2] & libc::POLLOUT != 0 {
            if let Ok(n) = write_some(1, &self.to_out) {
                self.to_out.drain(..n);
            }
        }
    }

    fn read_pty(&mut self, buf: &mut [u8]) {
        match sys::read(self.master.as_raw_fd(), buf) {
            // EIO: every slave descriptor is closed (the sandbox is gone).
            Ok(0) | Err(_) => self.pty_open = false,
            Ok(n) => self.to_out.extend_from_slice(&buf[..n]),
        }
    }

    /// After the sandbox has ended: move what the pty still holds to stdout.
    pub fn drain(&mut self) {
        let mut buf = [0u8; CHUNK];
        while self.pty_open {
            self.read_pty(&mut buf);
        }
        let mut rest = std::mem::take(&mut self.to_out);
        while !rest.is_empty() {
            match write_some(1, &rest) {
                Ok(n) if n > 0 => {
                    rest.drain(..n);
                }
                _ => break,
            }
        }
    }

    pub fn resize(&self) {
        sys::copy_winsize(0, self.master.as_raw_fd());
    }
}

fn write_some(fd: RawFd, data: &[u8]) -> std::io::Result<usize> {
    if data.is_empty() {
        return Ok(0);
    }
    sys::write_partial(fd, data)
}
