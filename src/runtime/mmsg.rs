//! Batched UDP I/O (`sendmmsg`/`recvmmsg`, Linux): one system call for up to [`BATCH`]
//! datagrams, so a burst of REGISTERs and their responses costs fewer kernel entries.
//!
//! Both calls are non-blocking (`MSG_DONTWAIT`) on the socket's fd; callers wait for readiness
//! through tokio (`UdpSocket::readable`/`writable`, `try_io`) as with `try_send_to`.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use crate::core::sip::MAX_MESSAGE;

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Receive slot: one byte more than accepted, so an oversized datagram shows as oversized.
const SLOT: usize = MAX_MESSAGE + 1;

fn to_storage(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut st: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut st as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut st as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (st, len as libc::socklen_t)
}

fn from_storage(st: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(st.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the kernel wrote a sockaddr_in (family and length checked).
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read((st as *const libc::sockaddr_storage).cast()) };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)).into())
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the kernel wrote a sockaddr_in6 (family and length checked).
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((st as *const libc::sockaddr_storage).cast()) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(
                SocketAddrV6::new(
                    ip,
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )
                .into(),
            )
        }
        _ => None,
    }
}

/// Sends up to [`BATCH`] of `msgs` with one `sendmmsg`. Returns how many were sent, from the
/// first; an error means the first one failed (`WouldBlock`: wait for writability and retry;
/// otherwise skip it: the kernel reports the failing datagram first on the next call).
pub fn send_batch(fd: RawFd, msgs: &[(&[u8], SocketAddr)]) -> io::Result<usize> {
    let n = msgs.len().min(BATCH);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: all-zero is valid for these plain C structs; every pointer set below points into
    // locals that outlive the call, and the kernel only reads the iovecs and addresses.
    let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
    let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    for (i, (payload, dest)) in msgs.iter().take(n).enumerate() {
        let (st, len) = to_storage(*dest);
        addrs[i] = st;
        iov[i] = libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        };
        hdrs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
        hdrs[i].msg_hdr.msg_namelen = len;
        hdrs[i].msg_hdr.msg_iov = &mut iov[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `hdrs[..n]` are initialised as above.
    let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// Buffers for one `recvmmsg` of up to [`BATCH`] datagrams (~512 KiB, allocated once).
pub struct RecvBatch {
    buf: Vec<u8>,
    addrs: Box<[libc::sockaddr_storage; BATCH]>,
    meta: [(usize, Option<SocketAddr>); BATCH],
    n: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::new()
    }
}

impl RecvBatch {
    pub fn new() -> Self {
        RecvBatch {
            buf: vec![0; BATCH * SLOT],
            // SAFETY: all-zero is a valid sockaddr_storage.
            addrs: Box::new(unsafe { zeroed() }),
            meta: [(0, None); BATCH],
            n: 0,
        }
    }

    /// Reads the datagrams already queued on `fd` (up to [`BATCH`]); `WouldBlock` when none.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.n = 0;
        // SAFETY: as in `send_batch`; the iovecs point at disjoint SLOT-sized parts of `buf`
        // and the names at `addrs`, all alive and exclusively borrowed during the call.
        let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, chunk) in self.buf.chunks_exact_mut(SLOT).enumerate() {
            iov[i] = libc::iovec {
                iov_base: chunk.as_mut_ptr().cast(),
                iov_len: SLOT,
            };
            hdrs[i].msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdrs[i].msg_hdr.msg_iov = &mut iov[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: see above.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = (r as usize).min(BATCH);
        for (i, h) in hdrs.iter().take(n).enumerate() {
            let len = (h.msg_len as usize).min(SLOT);
            self.meta[i] = (len, from_storage(&self.addrs[i], h.msg_hdr.msg_namelen));
        }
        self.n = n;
        Ok(n)
    }

    /// The datagrams of the last `recv`, with their sources (a datagram whose source could not
    /// be read is left out).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> + '_ {
        self.meta[..self.n]
            .iter()
            .enumerate()
            .filter_map(|(i, (len, from))| Some((&self.buf[i * SLOT..i * SLOT + len], (*from)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn batch_round_trip_over_loopback() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let payloads: Vec<Vec<u8>> = (0..40)
            .map(|i| vec![b'a' + (i % 26) as u8; i + 1])
            .collect();
        let msgs: Vec<(&[u8], SocketAddr)> =
            payloads.iter().map(|p| (p.as_slice(), b_addr)).collect();
        let mut sent = 0;
        while sent < msgs.len() {
            sent += send_batch(a.as_raw_fd(), &msgs[sent..]).unwrap();
        }
        let mut rb = RecvBatch::new();
        let mut got = Vec::new();
        while got.len() < msgs.len() {
            match rb.recv(b.as_raw_fd()) {
                Ok(_) => got.extend(rb.iter().map(|(d, from)| (d.to_vec(), from))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got.len(), 40);
        for (i, (d, from)) in got.iter().enumerate() {
            assert_eq!(d, &payloads[i]);
            assert_eq!(*from, a_addr);
        }
        // Nothing left: would block.
        assert_eq!(
            rb.recv(b.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn oversized_datagram_shows_oversized() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        a.send_to(&vec![b'x'; MAX_MESSAGE + 100], b.local_addr().unwrap())
            .unwrap();
        let mut rb = RecvBatch::new();
        b.set_nonblocking(false).unwrap();
        let n = rb.recv(b.as_raw_fd());
        // MSG_DONTWAIT: the datagram is already queued on loopback.
        assert_eq!(n.unwrap(), 1);
        assert_eq!(rb.iter().next().unwrap().0.len(), MAX_MESSAGE + 1);
    }

    #[test]
    fn addresses_convert_both_ways() {
        for a in ["10.77.0.11:5060", "[2001:db8::1]:5070", "[fe80::1%2]:5060"] {
            let a: SocketAddr = a.parse().unwrap();
            let (st, len) = to_storage(a);
            assert_eq!(from_storage(&st, len), Some(a));
        }
    }
}
