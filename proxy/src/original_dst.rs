//! The destination a connection had before iptables REDIRECT rewrote it, read from conntrack with
//! `SO_ORIGINAL_DST` (IPv4) or `IP6T_SO_ORIGINAL_DST` (IPv6).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

#[derive(Debug, thiserror::Error)]
pub enum OriginalDstError {
    #[error("no original destination is recorded for this connection (it was not redirected)")]
    NotRedirected,
    #[error(
        "the kernel cannot report original destinations (SO_ORIGINAL_DST unsupported: is nf_conntrack loaded?)"
    )]
    Unsupported,
    #[error("reading the original destination failed: {0}")]
    Os(#[source] io::Error),
}

impl OriginalDstError {
    fn from_os(err: io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::ENOENT) => OriginalDstError::NotRedirected,
            Some(libc::ENOPROTOOPT) => OriginalDstError::Unsupported,
            _ => OriginalDstError::Os(err),
        }
    }
}

/// The original destination of an accepted socket whose local address is `local`.
pub fn original_dst(
    socket: &impl AsRawFd,
    local: SocketAddr,
) -> Result<SocketAddr, OriginalDstError> {
    let fd = socket.as_raw_fd();
    let ipv4 = match local {
        SocketAddr::V4(_) => true,
        // A v4 client on a dual-stack socket is tracked by the IPv4 conntrack table.
        SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_some(),
    };
    if ipv4 {
        original_dst_v4(fd).map(SocketAddr::V4)
    } else {
        original_dst_v6(fd).map(SocketAddr::V6)
    }
}

fn original_dst_v4(fd: RawFd) -> Result<SocketAddrV4, OriginalDstError> {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `addr` and `len` are valid for writes and `len` holds the buffer's size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_IP,
            libc::SO_ORIGINAL_DST,
            (&mut addr as *mut libc::sockaddr_in).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(OriginalDstError::from_os(io::Error::last_os_error()));
    }
    let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
    Ok(SocketAddrV4::new(ip, u16::from_be(addr.sin_port)))
}

fn original_dst_v6(fd: RawFd) -> Result<SocketAddrV6, OriginalDstError> {
    // SAFETY: sockaddr_in6 is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    // SAFETY: `addr` and `len` are valid for writes and `len` holds the buffer's size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_IPV6,
            libc::IP6T_SO_ORIGINAL_DST,
            (&mut addr as *mut libc::sockaddr_in6).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(OriginalDstError::from_os(io::Error::last_os_error()));
    }
    Ok(SocketAddrV6::new(
        Ipv6Addr::from(addr.sin6_addr.s6_addr),
        u16::from_be(addr.sin6_port),
        u32::from_be(addr.sin6_flowinfo),
        addr.sin6_scope_id,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        assert!(matches!(
            OriginalDstError::from_os(io::Error::from_raw_os_error(libc::ENOENT)),
            OriginalDstError::NotRedirected
        ));
        assert!(matches!(
            OriginalDstError::from_os(io::Error::from_raw_os_error(libc::ENOPROTOOPT)),
            OriginalDstError::Unsupported
        ));
        let other = OriginalDstError::from_os(io::Error::from_raw_os_error(libc::EBADF));
        assert!(matches!(other, OriginalDstError::Os(_)));
        assert!(
            other
                .to_string()
                .starts_with("reading the original destination failed")
        );
    }

    #[test]
    fn unredirected_loopback_connection_reports_an_error_or_itself() {
        // Without a REDIRECT rule the kernel either has no conntrack entry (ENOENT), no conntrack
        // at all (ENOPROTOOPT), or reports the address the client really used.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(local).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        match original_dst(&accepted, accepted.local_addr().unwrap()) {
            Ok(addr) => assert_eq!(addr, local),
            Err(OriginalDstError::NotRedirected | OriginalDstError::Unsupported) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
}
