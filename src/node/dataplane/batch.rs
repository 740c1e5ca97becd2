//! One worker's packet memory: `BATCH` receive buffers and the
//! `recvmmsg`/`sendmmsg` headers pointing into them, allocated once when
//! the worker starts. A received datagram is sent from the buffer it
//! arrived in: forwarding copies no payload.

use std::io;
use std::mem::zeroed;
use std::os::fd::RawFd;

use super::sys::{Key, RawAddr};

/// Datagrams per system call.
pub const BATCH: usize = 64;
/// Largest datagram forwarded; a longer one arrives truncated and is
/// dropped (RTP and TURN ChannelData fit in an Ethernet MTU).
pub const BUF: usize = 2048;

/// What one received datagram is: its source and length.
#[derive(Clone, Copy, Debug)]
pub struct Received {
    pub source: Option<Key>,
    pub len: usize,
    pub truncated: bool,
}

pub struct Batch {
    bufs: Vec<u8>,
    rx_names: Vec<libc::sockaddr_storage>,
    rx_iov: Vec<libc::iovec>,
    rx: Vec<libc::mmsghdr>,
    tx_names: Vec<libc::sockaddr_storage>,
    tx_iov: Vec<libc::iovec>,
    tx: Vec<libc::mmsghdr>,
    tx_len: usize,
}

impl Batch {
    pub fn new() -> Batch {
        // SAFETY: these are plain C structs; all zeroes is a valid value
        // (null pointers, zero lengths), and every pointer is set before
        // a system call reads it.
        let (name, iov, hdr) =
            unsafe { (zeroed::<libc::sockaddr_storage>(), zeroed::<libc::iovec>(), zeroed::<libc::mmsghdr>()) };
        Batch {
            bufs: vec![0; BATCH * BUF],
            rx_names: vec![name; BATCH],
            rx_iov: vec![iov; BATCH],
            rx: vec![hdr; BATCH],
            tx_names: vec![name; BATCH],
            tx_iov: vec![iov; BATCH],
            tx: vec![hdr; BATCH],
            tx_len: 0,
        }
    }

    /// Receives up to `BATCH` datagrams without blocking; 0 when none wait.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let base = self.bufs.as_mut_ptr();
        let slots = self.rx.iter_mut().zip(self.rx_iov.iter_mut()).zip(self.rx_names.iter_mut());
        for (i, ((m, iov), name)) in slots.enumerate() {
            // Pointers are set on every call: the vectors never move after
            // `new`, but this keeps the invariant local.
            *iov = libc::iovec { iov_base: base.wrapping_add(i * BUF).cast(), iov_len: BUF };
            m.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = std::ptr::null_mut();
            m.msg_hdr.msg_controllen = 0;
            m.msg_hdr.msg_flags = 0;
            m.msg_len = 0;
        }
        // SAFETY: `rx` holds BATCH headers, each pointing at its own name,
        // iovec and BUF bytes of `bufs`, all alive and unaliased for the call.
        let n = unsafe {
            libc::recvmmsg(fd, self.rx.as_mut_ptr(), BATCH as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// The `i`-th datagram of the last `recv`.
    pub fn received(&self, i: usize) -> Received {
        match (self.rx.get(i), self.rx_names.get(i)) {
            (Some(m), Some(name)) => Received {
                source: Key::from_storage(name),
                len: m.msg_len as usize,
                truncated: m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            },
            _ => Received { source: None, len: 0, truncated: true },
        }
    }

    /// Queues received datagram `i` (its first `len` bytes) for `dest`.
    pub fn push_tx(&mut self, i: usize, len: usize, dest: &RawAddr) {
        let j = self.tx_len;
        let base = self.bufs.as_mut_ptr();
        if let (Some(m), Some(iov), Some(name)) = (self.tx.get_mut(j), self.tx_iov.get_mut(j), self.tx_names.get_mut(j))
            && i < BATCH
        {
            *name = dest.storage;
            *iov = libc::iovec { iov_base: base.wrapping_add(i * BUF).cast(), iov_len: len.min(BUF) };
            m.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen = dest.len;
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = std::ptr::null_mut();
            m.msg_hdr.msg_controllen = 0;
            m.msg_hdr.msg_flags = 0;
            self.tx_len = j + 1;
        }
    }

    pub fn tx_len(&self) -> usize {
        self.tx_len
    }

    pub fn clear_tx(&mut self) {
        self.tx_len = 0;
    }

    /// Sends queued datagrams `from..` with one `sendmmsg`; returns how
    /// many left. `Err` means datagram `from` itself failed.
    pub fn send(&mut self, fd: RawFd, from: usize) -> io::Result<usize> {
        let count = self.tx_len.saturating_sub(from);
        if count == 0 {
            return Ok(0);
        }
        let first = self.tx.as_mut_ptr().wrapping_add(from);
        // SAFETY: headers `from..tx_len` were filled by `push_tx` and point
        // at `tx_names`, `tx_iov` and `bufs`, alive for the call. The socket
        // blocks when its send buffer is full: back-pressure, not loss.
        let n = unsafe { libc::sendmmsg(fd, first, count as libc::c_uint, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(n).unwrap_or(0))
    }
}
