//! Engine tests of server-first protocols (SSH, SMTP, IMAP, FTP): flows dialled at the SYN, whose SYN|ACK is
//! released only once the upstream connected, and where both sides may speak at once.

use super::*;

// Regression (issue 12.6): right after the upstream connected, the phone's side was still SYN-RECEIVED (the
// released SYN|ACK not yet ACKed); `may_recv()` is false there and the splice took that for the client's FIN and
// half-closed the upstream connection. sshd then read EOF and hung up: `kex_exchange_identification: read:
// Connection reset by peer` on the client, `upstream_reset: Broken pipe` in the events.
#[test]
fn server_first_flow_keeps_the_upstream_open_until_the_client_closes() {
    let mut pair = Pair::new();
    let h = pair.connect(NORMAL, 22);
    let (flow, _) = pair.up.connects[0];
    pair.engine.on_tcp_connected(pair.now, flow, Ok(()), &mut pair.up);
    pair.settle();
    pair.drive();
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Established);
    assert!(pair.up.shutdowns.is_empty(), "FIN forwarded before the client closed: {:?}", pair.up.shutdowns);
    // Both sides speak at once: the server's banner and the client's.
    pair.up.to_read.insert(flow, b"SSH-2.0-OpenSSH_9.2\r\n".to_vec());
    pair.engine.on_upstream_readable(flow);
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
    pair.engine.on_tcp_connected(pair.now, flow, Ok(()), &mut pair.up);
    pair.settle();
    assert_eq!(pair.take_out().len(), 1, "SYN|ACK released");
    pair.wait(Duration::from_millis(200));
    assert!(pair.up.shutdowns.is_empty(), "no FIN upstream while the handshake is incomplete");
    assert!(pair.up.closed.is_empty(), "the flow waits for the phone's ACK");
}
