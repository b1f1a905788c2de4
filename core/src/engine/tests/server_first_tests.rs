//! Engine tests of server-first protocols (SSH, SMTP, IMAP, FTP): flows dialled at the SYN, whose SYN|ACK is
//! released only once the upstream connected, and where both sides may speak at once.

use super::*;

/// An SSH connection (dialled at the SYN) whose upstream connected, the phone's handshake completed.
fn connected_ssh(pair: &mut Pair) -> (SocketHandle, FlowId) {
    let h = pair.connect(NORMAL, 22);
    let (flow, _) = pair.up.connects[0];
    pair.engine.on_tcp_connected(pair.now, flow, Ok(()));
    pair.settle();
    pair.drive();
    (h, flow)
}

// Regression (issue 12.6): right after the upstream connected, the phone's side was still SYN-RECEIVED (the
// released SYN|ACK not yet ACKed); `may_recv()` is false there and the splice took that for the client's FIN and
// half-closed the upstream connection. sshd then read EOF and hung up: `kex_exchange_identification: read:
// Connection reset by peer` on the client, `upstream_reset: Broken pipe` in the events.
#[test]
fn server_first_flow_keeps_the_upstream_open_until_the_client_closes() {
    let mut pair = Pair::new();
    let (h, flow) = connected_ssh(&mut pair);
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Established);
    assert!(pair.up.shutdowns.is_empty(), "FIN forwarded before the client closed: {:?}", pair.up.shutdowns);
    // Both sides speak at once: the server's banner and the client's.
    pair.up.to_read.insert(flow, b"SSH-2.0-OpenSSH_9.2\r\n".to_vec());
    pair.upstream_readable(flow);
    pair.phone_tcp(h).send_slice(b"SSH-2.0-OpenSSH_9.2p1\r\n").expect("send");
    pair.drive();
    let mut banner = [0u8; 64];
    let n = pair.phone_tcp(h).recv_slice(&mut banner).expect("recv");
    assert_eq!(&banner[..n], b"SSH-2.0-OpenSSH_9.2\r\n");
    assert_eq!(pair.up.written[&flow], b"SSH-2.0-OpenSSH_9.2p1\r\n");
    assert!(pair.up.shutdowns.is_empty());
    // Only the client's own FIN goes upstream.
    pair.phone_tcp(h).close();
    pair.drive();
    assert_eq!(pair.up.shutdowns, vec![flow]);
}

#[test]
fn server_first_flow_is_spliced_when_the_phone_acks_late() {
    let mut pair = Pair::new();
    pair.raw(&raw_tcp(NORMAL, 25, 9000, true, false));
    let (flow, _) = *pair.up.connects.first().expect("server-first port dials at once");
    pair.engine.on_tcp_connected(pair.now, flow, Ok(()));
    pair.settle();
    assert_eq!(pair.take_out().len(), 1, "SYN|ACK released");
    pair.wait(Duration::from_millis(200));
    assert!(pair.up.shutdowns.is_empty(), "no FIN upstream while the handshake is incomplete");
    assert!(pair.up.closed.is_empty(), "the flow waits for the phone's ACK");
}

/// A name DNS gave for the address does not change when a flow is dialled: at the SYN on a server-first port, only
/// after the client's first bytes on a web port.
#[test]
fn a_known_name_is_dialled_at_the_syn_only_on_server_first_ports() {
    let mut pair = Pair::new();
    pair.udp([198, 18, 53, 53], 53, &dns_query("www.example.org"));
    let (dns, forwarded) = pair.up.udp_sent[0].clone();
    pair.engine.on_udp_datagram(pair.now, dns, &answer_with_a(&forwarded, NORMAL));
    pair.settle();
    pair.connect(NORMAL, 22);
    assert_eq!(pair.up.connects.len(), 1, "SSH: dialled at the SYN");
    pair.connect(NORMAL, 443);
    assert_eq!(pair.up.connects.len(), 1, "HTTPS: the ClientHello is read first");
}

/// A server's banner already waiting when the connect completes is read at once (the driver's readiness event
/// for it may have come with the connect's).
#[test]
fn a_banner_waiting_at_connect_reaches_the_phone() {
    let mut pair = Pair::new();
    let h = pair.connect(NORMAL, 22);
    let (flow, _) = pair.up.connects[0];
    pair.up.to_read.insert(flow, b"SSH-2.0-OpenSSH_9.2\r\n".to_vec());
    pair.engine.on_tcp_connected(pair.now, flow, Ok(()));
    pair.settle();
    pair.drive();
    let mut banner = [0u8; 64];
    let n = pair.phone_tcp(h).recv_slice(&mut banner).expect("recv");
    assert_eq!(&banner[..n], b"SSH-2.0-OpenSSH_9.2\r\n");
}

/// The handshake deadline set when the SYN|ACK is released ends only a flow whose phone never answered it.
#[test]
fn a_completed_handshake_outlives_its_deadline() {
    let mut pair = Pair::new();
    let (h, _) = connected_ssh(&mut pair);
    pair.wait(Duration::from_secs(11));
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Established);
    assert!(pair.up.closed.is_empty());
}
