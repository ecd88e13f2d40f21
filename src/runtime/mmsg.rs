//! Batched UDP I/O (`sendmmsg`/`recvmmsg`, Linux, through `nix`'s safe wrappers): one system
//! call for up to [`BATCH`] datagrams, so a burst of REGISTERs and their responses costs fewer
//! kernel entries.
//!
//! Both calls are non-blocking (`MSG_DONTWAIT`) on the socket's fd; callers wait for readiness
//! through tokio (`UdpSocket::readable`/`writable`, `try_io`) as with `try_send_to`.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};

use crate::core::sip::MAX_MESSAGE;

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Receive slot: one byte more than accepted, so an oversized datagram shows as oversized.
const SLOT: usize = MAX_MESSAGE + 1;

/// Sends up to [`BATCH`] datagrams in one call; returns how many the kernel took (the first
/// failing datagram's error when it took none).
pub fn send_batch(fd: RawFd, msgs: &[(&[u8], SocketAddr)]) -> io::Result<usize> {
    let msgs = &msgs[..msgs.len().min(BATCH)];
    if msgs.is_empty() {
        return Ok(0);
    }
    let slices: Vec<[IoSlice<'_>; 1]> = msgs.iter().map(|(b, _)| [IoSlice::new(b)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = msgs
        .iter()
        .map(|(_, a)| Some(SockaddrStorage::from(*a)))
        .collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(msgs.len(), None);
    let none: [ControlMessage<'_>; 0] = [];
    let sent = sendmmsg(
        fd,
        &mut headers,
        &slices,
        &addrs,
        none,
        MsgFlags::MSG_DONTWAIT,
    )?;
    Ok(sent.count())
}

/// Buffers for one `recvmmsg` of up to [`BATCH`] datagrams (~512 KiB, allocated once).
pub struct RecvBatch {
    buf: Vec<u8>,
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
            meta: [(0, None); BATCH],
            n: 0,
        }
    }

    /// Reads the datagrams already queued on `fd` (up to [`BATCH`]); `WouldBlock` when none.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.n = 0;
        // Headers per call: nix's are not `Send`, and the driver's future must be.
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
            .buf
            .chunks_exact_mut(SLOT)
            .map(|c| [IoSliceMut::new(c)])
            .collect();
        let got = recvmmsg(
            fd,
            &mut headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        let mut n = 0;
        for (slot, msg) in self.meta.iter_mut().zip(got) {
            *slot = (msg.bytes.min(SLOT), msg.address.and_then(socket_addr));
            n += 1;
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

fn socket_addr(a: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
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
    fn ipv6_sources_come_back_whole() {
        let Ok(a) = std::net::UdpSocket::bind("[::1]:0") else {
            return; // no IPv6 loopback here
        };
        let b = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let sent = send_batch(a.as_raw_fd(), &[(b"v6", b.local_addr().unwrap())]).unwrap();
        assert_eq!(sent, 1);
        let mut rb = RecvBatch::new();
        b.set_nonblocking(false).unwrap();
        assert_eq!(rb.recv(b.as_raw_fd()).unwrap(), 1);
        let (d, from) = rb.iter().next().unwrap();
        assert_eq!((d, from), (&b"v6"[..], a.local_addr().unwrap()));
    }
}
