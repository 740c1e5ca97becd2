//! The Linux calls the workers make, wrapped once: addresses as the kernel
//! writes them, epoll, an eventfd to wake a worker, socket buffer sizes.
//! Every `unsafe` block of the data plane outside `batch.rs` is here.

use std::hash::{BuildHasher, Hash, Hasher};
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A remote address as a worker compares it: IPv4 as IPv4-mapped IPv6, so
/// a dual-stack socket's view and the installed address agree; flow label
/// and scope are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    ip: u128,
    port: u16,
}

impl Key {
    pub fn of(addr: SocketAddr) -> Key {
        let v6 = match addr.ip() {
            IpAddr::V4(a) => a.to_ipv6_mapped(),
            IpAddr::V6(a) => a,
        };
        Key { ip: u128::from(v6), port: addr.port() }
    }

    /// The source address the kernel wrote into `ss` (None for a family
    /// other than IPv4/IPv6).
    pub fn from_storage(ss: &libc::sockaddr_storage) -> Option<Key> {
        match i32::from(ss.ss_family) {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in (family AF_INET);
                // sockaddr_storage is larger and at least as aligned.
                let sin = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                let ip = u32::from_be(sin.sin_addr.s_addr);
                Some(Key { ip: 0xffff_0000_0000 | u128::from(ip), port: u16::from_be(sin.sin_port) })
            }
            libc::AF_INET6 => {
                // SAFETY: as above, for sockaddr_in6 (family AF_INET6).
                let sin6 = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                Some(Key { ip: u128::from_be_bytes(sin6.sin6_addr.s6_addr), port: u16::from_be(sin6.sin6_port) })
            }
            _ => None,
        }
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // One word: the map's keys are installed by the control loop, so
        // the probe lengths do not depend on what a sender chooses.
        state.write_u64((self.ip as u64) ^ ((self.ip >> 64) as u64).rotate_left(17) ^ (u64::from(self.port) << 48));
    }
}

/// A multiply-rotate hasher for [`Key`] (the per-packet lookup; SipHash
/// would cost more than the rest of the lookup).
#[derive(Clone, Copy, Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl BuildHasher for KeyHasher {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// A destination in the form `sendmmsg` takes, built once at install.
#[derive(Clone, Copy)]
pub struct RawAddr {
    pub storage: libc::sockaddr_storage,
    pub len: libc::socklen_t,
}

impl RawAddr {
    /// `addr` for a socket of the given family (IPv4 on an IPv6 socket
    /// becomes IPv4-mapped); None for IPv6 on an IPv4 socket.
    pub fn new(addr: SocketAddr, socket_is_v6: bool) -> Option<RawAddr> {
        // SAFETY: sockaddr_storage is plain data; all zeroes is valid.
        let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
        let len = match (addr, socket_is_v6) {
            (SocketAddr::V4(a), false) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_in fits in sockaddr_storage, which is aligned for it.
                unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
                size_of::<libc::sockaddr_in>()
            }
            (SocketAddr::V6(_), false) => return None,
            (a, true) => {
                let v6 = match a {
                    SocketAddr::V4(v4) => SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0),
                    SocketAddr::V6(v6) => v6,
                };
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: v6.flowinfo().to_be(),
                    sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                    sin6_scope_id: v6.scope_id(),
                };
                // SAFETY: as above, for sockaddr_in6.
                unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
                size_of::<libc::sockaddr_in6>()
            }
        };
        Some(RawAddr { storage, len: len as libc::socklen_t })
    }
}

/// True when `ip` is one of this host's addresses (binding to it works).
pub fn is_local(ip: IpAddr) -> bool {
    ip.is_unspecified() || ip.is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Asks for `bytes` of receive and send buffer (best effort: the kernel
/// caps it at rmem_max/wmem_max and says nothing).
pub fn set_buffers(fd: RawFd, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: a valid fd and a c_int option value of the stated size.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A non-blocking eventfd: the control loop writes, the worker's epoll
/// wakes, the worker drains it and then its command queue.
pub struct Wake(OwnedFd);

impl Wake {
    pub fn new() -> io::Result<Wake> {
        // SAFETY: plain syscall; the fd is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Wake(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a u64 to an eventfd. A full counter
        // (EAGAIN) already means "wake up", so the result is not needed.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a u64; EAGAIN when nothing is pending.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// An epoll set of a few descriptors, each with a token.
pub struct Epoll(OwnedFd);

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall; the fd is owned below.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Level-triggered readability of `fd`, reported with `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        // SAFETY: valid descriptors and a valid event struct.
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits (forever when `timeout_ms` is -1) and returns how many of
    /// `events` were filled.
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        let max = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `events` is writable for `max` entries.
        let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(0) } else { Err(e) };
        }
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_and_mapped_v4_are_one_key() {
        let v4: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:4000".parse().unwrap();
        assert_eq!(Key::of(v4), Key::of(mapped));
        assert_ne!(Key::of(v4), Key::of("192.0.2.1:4001".parse().unwrap()));
        for (a, v6) in [(v4, false), (v4, true), (mapped, true), ("[2001:db8::1]:9".parse().unwrap(), true)] {
            let raw = RawAddr::new(a, v6).unwrap();
            assert_eq!(Key::from_storage(&raw.storage), Some(Key::of(a)), "{a} v6={v6}");
        }
        assert!(RawAddr::new("[2001:db8::1]:9".parse().unwrap(), false).is_none());
    }

    #[test]
    fn loopback_is_local_and_documentation_addresses_are_not() {
        assert!(is_local("127.0.0.1".parse().unwrap()));
        assert!(!is_local("192.0.2.77".parse().unwrap()));
    }
}
