//! Whose is a loopback connection: a relay's listener serves only the connections this process
//! opened itself (see [`super::relay`]), since every container of the pod shares its loopback.

use std::net::{IpAddr, SocketAddr};

/// Whether the TCP connection from `peer` to `listening` (both loopback) was opened by this
/// process: the socket at `peer` is one of its own file descriptors. Reads Linux's
/// `/proc/self/net/tcp` (the connection's inode) and `/proc/self/fd`; anything unreadable is a
/// no.
pub(super) fn is_own_socket(peer: SocketAddr, listening: SocketAddr) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/net/tcp") else {
        return false;
    };
    let Some(inode) = table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, inode) = (fields.get(1)?, fields.get(2)?, fields.get(9)?);
        (parse_proc_addr(local)? == peer && parse_proc_addr(remote)? == listening)
            .then(|| inode.to_string())
    }) else {
        return false;
    };
    let wanted = format!("socket:[{inode}]");
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == wanted.as_str())
    })
}

/// An IPv4 address of `/proc/net/tcp`: `0100007F:1F90` (the address as the kernel stores it,
/// in hex; the port in hex).
fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddr::new(
        IpAddr::V4(std::net::Ipv4Addr::from(ip.to_ne_bytes())),
        port,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_addresses_parse() {
        assert_eq!(
            parse_proc_addr(&format!("{:08X}:1F90", u32::from_ne_bytes([127, 0, 0, 1]))),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(parse_proc_addr("xyz"), None);
    }

    #[test]
    fn only_the_process_own_connections_are_its_own() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listening = listener.local_addr().unwrap();
        let own = std::net::TcpStream::connect(listening).unwrap();
        let (_accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer, own.local_addr().unwrap());
        assert!(is_own_socket(peer, listening));
        // Another process connecting (a sidecar sharing the loopback, say).
        let mut other = std::process::Command::new("bash")
            .args([
                "-c",
                &format!("exec 3<>/dev/tcp/127.0.0.1/{}; sleep 5", listening.port()),
            ])
            .spawn()
            .unwrap();
        let (_accepted, stranger) = listener.accept().unwrap();
        assert!(!is_own_socket(stranger, listening));
        let _ = other.kill();
        let _ = other.wait();
    }
}
