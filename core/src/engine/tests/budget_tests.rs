//! Issue 18.8: per-client budgets. One client (source address) flooding the flow tables cannot keep another
//! out: at a full table the client within its share takes room from the one most over its share (that client's
//! least recently active flows first), the flooder is refused with `client_limit`, and what a client holds is
//! released when its flows close. TCP buffers past a client's byte budget are small.

use super::*;
use crate::engine::budget::{Client, SMALL_TCP_BUFFER};
use crate::inspect::quic::seal::{client_initial, crypto_frame};
use crate::inspect::quic::VERSION_1;

const A: [u8; 4] = PHONE;
const B: [u8; 4] = [10, 111, 0, 2];

/// A bare SYN from `src:port` to 198.18.1.1:80.
/// An engine with the budgets a gateway sets (`hushwall gateway`): a quarter of each cap per client, 64 MiB of
/// full-size TCP buffers each.
fn gateway_pair() -> Pair {
    let mut pair = Pair::new();
    pair.engine.config.client_share_percent = 25;
    pair.engine.config.client_tcp_buffer_budget = 64 * 1024 * 1024;
    pair
}

fn syn_from(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut p = Vec::new();
    PacketBuilder::ipv4(src, NORMAL, 64).tcp(port, 80, 1000, 64240).syn().write(&mut p, &[]).expect("builds");
    p
}

fn send_syn(pair: &mut Pair, src: [u8; 4], port: u16) {
    pair.engine.handle_tun_packet(pair.now, &syn_from(src, port), &mut pair.up);
    pair.settle();
    pair.engine.poll(pair.now);
    pair.settle();
    pair.take_out();
}

/// A UDP datagram from `src:5353` to 198.18.1.1:`dst_port`.
fn udp_from(pair: &mut Pair, src: [u8; 4], dst_port: u16) {
    let mut p = Vec::new();
    PacketBuilder::ipv4(src, NORMAL, 64).udp(5353, dst_port).write(&mut p, b"x").expect("builds");
    pair.engine.handle_tun_packet(pair.now, &p, &mut pair.up);
    pair.settle();
    pair.engine.poll(pair.now);
    pair.settle();
}

/// The client ports of the TCP flows `src` holds, sorted.
fn tcp_ports(pair: &Pair, src: [u8; 4]) -> Vec<u16> {
    let ip = IpAddr::from(src);
    let mut ports: Vec<u16> =
        pair.engine.tcp.values().filter(|f| f.client.ip() == ip).map(|f| f.client.port()).collect();
    ports.sort_unstable();
    ports
}

fn reasons(pair: &mut Pair) -> Vec<(Action, Reason)> {
    pair.events().iter().map(|e| (e.action(), e.reason())).collect()
}

#[test]
fn a_client_within_its_share_takes_room_from_the_flooder_oldest_first() {
    let mut pair = gateway_pair();
    pair.engine.config.max_tcp_flows = 8; // share: 2 per client
    for port in 1000..1008 {
        send_syn(&mut pair, A, port);
        pair.now += Duration::from_millis(10);
    }
    assert_eq!(pair.engine.stats().tcp_active, 8, "alone, a client may fill the table");
    assert!(pair.events().is_empty());
    // B is within its share: A's least recently active flow makes room, then the next.
    send_syn(&mut pair, B, 2000);
    send_syn(&mut pair, B, 2001);
    assert_eq!(tcp_ports(&pair, B), [2000, 2001]);
    assert_eq!(tcp_ports(&pair, A), (1002..1008).collect::<Vec<_>>(), "A's oldest flows went first");
    assert_eq!(pair.engine.stats().flows_evicted, 2);
    assert_eq!(
        reasons(&mut pair),
        [(Action::Error, Reason::Error(ErrorReason::FlowEvicted))],
        "the second is folded into a summary"
    );
    // A is over its share: refused, and B's flows stay.
    send_syn(&mut pair, A, 1008);
    assert_eq!(reasons(&mut pair), [(Action::Block, Reason::Block(BlockReason::ClientLimit))]);
    assert_eq!(tcp_ports(&pair, B), [2000, 2001]);
    // B at its share is refused too rather than take more from A (nobody is quiet).
    send_syn(&mut pair, B, 2002);
    assert_eq!(reasons(&mut pair), [(Action::Block, Reason::Block(BlockReason::ClientLimit))]);
    assert_eq!(pair.engine.stats().tcp_active, 8);
}

#[test]
fn a_client_over_its_share_makes_room_from_its_own_quiet_flows_only() {
    let mut pair = gateway_pair();
    pair.engine.config.max_tcp_flows = 4; // share: 1 per client
    for port in 1000..1003 {
        send_syn(&mut pair, A, port);
        pair.now += Duration::from_millis(10);
    }
    let (quiet, quiet_flow) = forwarding_flow(&mut pair); // A's fourth flow, established, the most recent
    assert_eq!(pair.engine.stats().tcp_active, 4);
    // B within its share evicts A's least recently active flow, whatever its phase.
    send_syn(&mut pair, B, 2000);
    assert_eq!(tcp_ports(&pair, B), [2000]);
    assert_eq!(tcp_ports(&pair, A).first(), Some(&1001));
    assert_eq!(pair.engine.stats().tcp_active, 4);
    assert_eq!(pair.phone_tcp(quiet).state(), tcp::State::Established);
    let evicted = super::failure_tests::failures(&mut pair);
    assert_eq!(evicted.len(), 1);
    assert!(evicted[0].2.starts_with("flow table full; 10.111.0.1 holds more than its share; idle for"), "{evicted:?}");
    // 61 s later A's established flow is quiet: A's next connection may replace it, but never B's.
    pair.now += Duration::from_secs(61);
    pair.events();
    let before = tcp_ports(&pair, A).len();
    send_syn(&mut pair, A, 1010);
    assert_eq!(tcp_ports(&pair, B), [2000], "B's flow is never taken by A");
    assert_eq!(tcp_ports(&pair, A).len(), before, "one of A's own flows made room");
    assert!(tcp_ports(&pair, A).contains(&1010));
    assert_eq!(pair.engine.stats().flows_evicted, 2, "B's eviction, then A's own quiet flow");
    assert!(pair.up.closed.contains(&(quiet_flow, true)), "A's quiet flow made room: {:?}", pair.up.closed);
    let evicted = super::failure_tests::failures(&mut pair);
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].2, "flow table full; idle for 61 s", "its own flow: no share to blame");
}

#[test]
fn budgets_are_released_when_flows_close() {
    let mut pair = gateway_pair();
    let (h1, _) = forwarding_flow(&mut pair);
    let (h2, _) = forwarding_flow(&mut pair);
    send_syn(&mut pair, B, 2000);
    let usage = pair.engine.budgets.usage(Client::Address(IpAddr::from(A)));
    assert_eq!(usage.tcp, 2);
    assert!(usage.tcp_buffers > 0);
    assert_eq!(pair.engine.budgets.usage(Client::Address(IpAddr::from(B))).tcp, 1);
    pair.phone_tcp(h1).abort();
    pair.phone_tcp(h2).abort();
    pair.drive();
    assert_eq!(pair.engine.budgets.usage(Client::Address(IpAddr::from(A))), Default::default(), "released on close");
    udp_from(&mut pair, A, 7);
    assert_eq!(pair.engine.budgets.usage(Client::Address(IpAddr::from(A))).udp, 1);
    pair.wait(Duration::from_secs(61));
    assert_eq!(
        pair.engine.budgets.usage(Client::Address(IpAddr::from(A))),
        Default::default(),
        "released on idle expiry"
    );
}

#[test]
fn flows_past_the_buffer_budget_get_small_buffers() {
    let mut pair = gateway_pair();
    let full = pair.engine.tcp_rx_buffer_size() + pair.engine.config.tcp_buffer_size;
    pair.engine.config.client_tcp_buffer_budget = 2 * full;
    for port in 1000..1004 {
        send_syn(&mut pair, A, port);
    }
    send_syn(&mut pair, B, 2000);
    let capacity = |pair: &mut Pair, src: [u8; 4], port: u16| {
        let handle = pair.engine.tcp.values().find(|f| f.client == SocketAddr::from((src, port))).expect("flow").handle;
        let socket = pair.engine.stack.tcp(handle);
        (socket.recv_capacity(), socket.send_capacity())
    };
    let full_sizes = (pair.engine.tcp_rx_buffer_size(), pair.engine.config.tcp_buffer_size);
    assert_eq!(capacity(&mut pair, A, 1000), full_sizes);
    assert_eq!(capacity(&mut pair, A, 1001), full_sizes);
    // 16 KiB each way, as README and RELIABILITY state.
    assert_eq!(capacity(&mut pair, A, 1002), (16 * 1024, 16 * 1024), "past A's budget");
    assert_eq!(capacity(&mut pair, A, 1003), (SMALL_TCP_BUFFER, SMALL_TCP_BUFFER));
    assert_eq!(capacity(&mut pair, B, 2000), full_sizes, "B has its own budget");
    assert_eq!(
        pair.engine.budgets.usage(Client::Address(IpAddr::from(A))).tcp_buffers,
        2 * full + 4 * SMALL_TCP_BUFFER
    );
}

#[test]
fn udp_flood_from_one_client_leaves_room_for_another() {
    let mut pair = gateway_pair();
    pair.engine.config.max_udp_flows = 4; // share: 1 per client
    for port in 10..14 {
        udp_from(&mut pair, A, port);
        pair.now += Duration::from_millis(10);
    }
    assert_eq!(pair.engine.stats().udp_active, 4);
    pair.take_out();
    pair.events();
    udp_from(&mut pair, B, 10);
    assert_eq!(pair.engine.stats().udp_active, 4);
    assert!(pair.take_out().is_empty(), "B served, no refusal");
    let evicted: Vec<_> =
        pair.events().into_iter().filter(|e| e.reason() == Reason::Error(ErrorReason::FlowEvicted)).collect();
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].dst.port(), 10, "A's least recently active flow");
    let why = evicted[0].error().unwrap_or_default();
    assert!(why.contains("holds more than its share; idle for 0 s"), "{why}");
    udp_from(&mut pair, A, 20);
    assert_eq!(pair.take_out().len(), 1, "A refused with ICMP");
    assert_eq!(reasons(&mut pair), [(Action::Block, Reason::Block(BlockReason::ClientLimit))]);
    // Once one of A's own flows has been quiet long enough, A's next flow takes its place.
    pair.now += Duration::from_secs(16);
    udp_from(&mut pair, A, 21);
    assert!(pair.take_out().is_empty(), "A served from its own quiet flow");
    let evicted: Vec<_> =
        pair.events().into_iter().filter(|e| e.reason() == Reason::Error(ErrorReason::FlowEvicted)).collect();
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].error(), Some("flow table full; idle for 16 s"));
}

/// Two apps on one phone address: app A on client ports 1000..=1999, app B on 2000.. (the fake upstream tells).
const APP_A: u32 = 10_001;
const APP_B: u32 = 10_002;

/// An engine with the budgets the app sets: by app, a quarter of each cap per app, 64 MiB of full-size TCP
/// buffers each; the fake upstream knows which app owns which client port.
fn app_pair() -> Pair {
    let mut pair = gateway_pair();
    pair.engine.config.budget_by_app = true;
    pair.up.owners = (1000..2000).map(|port| (port, APP_A)).chain((2000..3000).map(|port| (port, APP_B))).collect();
    pair
}

/// A UDP datagram from the phone's `src_port` to 198.18.1.1:`dst_port`.
fn udp_from_port(pair: &mut Pair, src_port: u16, dst_port: u16) {
    let mut p = Vec::new();
    PacketBuilder::ipv4(PHONE, NORMAL, 64).udp(src_port, dst_port).write(&mut p, b"x").expect("builds");
    pair.engine.handle_tun_packet(pair.now, &p, &mut pair.up);
    pair.settle();
    pair.engine.poll(pair.now);
    pair.settle();
}

#[test]
fn apps_sharing_one_address_each_get_their_share() {
    let mut pair = app_pair();
    pair.engine.config.max_tcp_flows = 8; // share: 2 per app; owners asked from 4 flows on
    for port in 1000..1004 {
        send_syn(&mut pair, A, port);
        pair.now += Duration::from_millis(10);
    }
    assert_eq!(pair.up.owner_lookups, 0, "no owner asked below half the cap");
    for port in 1004..1008 {
        send_syn(&mut pair, A, port);
        pair.now += Duration::from_millis(10);
    }
    assert_eq!(pair.up.owner_lookups, 4, "one lookup per flow from half the cap on");
    assert_eq!(pair.engine.stats().tcp_active, 8, "alone, an app may fill the table");
    assert_eq!(pair.engine.budgets.usage(Client::App(APP_A)).tcp, 4);
    assert_eq!(pair.engine.budgets.usage(Client::Address(IpAddr::from(A))).tcp, 4, "the first half by address");
    assert!(pair.events().is_empty());
    // B, on the same address, is within its share: A's least recently active flows make room.
    send_syn(&mut pair, A, 2000);
    send_syn(&mut pair, A, 2001);
    assert_eq!(pair.engine.budgets.usage(Client::App(APP_B)).tcp, 2);
    let a_ports: Vec<u16> = tcp_ports(&pair, A).into_iter().filter(|&p| p < 2000).collect();
    // First A's least recently active flow (of the address's four, as many as A's own four: the address gives
    // first), then the oldest of A's own, now the client most over its share.
    assert_eq!(a_ports, [1001, 1002, 1003, 1005, 1006, 1007], "A's oldest flows went first");
    assert_eq!(pair.engine.stats().flows_evicted, 2);
    pair.events();
    // A is over its share: refused, attributed to A; B's flows stay.
    send_syn(&mut pair, A, 1008);
    let events = pair.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].reason(), events[0].uid), (Reason::Block(BlockReason::ClientLimit), Some(APP_A)));
    assert_eq!(pair.engine.stats().blocked, 1, "the refusal is counted as a block");
    assert_eq!(pair.engine.budgets.usage(Client::App(APP_B)).tcp, 2);
    assert_eq!(pair.engine.stats().tcp_active, 8);
    assert_eq!(pair.up.owner_lookups, 7, "never two lookups for one flow");
}

#[test]
fn an_app_flooding_udp_leaves_room_for_another_on_the_same_address() {
    let mut pair = app_pair();
    pair.engine.config.max_udp_flows = 4; // share: 1 per app
    for dst_port in 10..14 {
        udp_from_port(&mut pair, 1000, dst_port);
        pair.now += Duration::from_millis(10);
    }
    assert_eq!(pair.up.owner_lookups, 2, "asked from half the cap on");
    pair.take_out();
    pair.events();
    udp_from_port(&mut pair, 2000, 10);
    assert!(pair.take_out().is_empty(), "B served, no refusal");
    assert_eq!(pair.engine.budgets.usage(Client::App(APP_B)).udp, 1);
    let evicted: Vec<_> =
        pair.events().into_iter().filter(|e| e.reason() == Reason::Error(ErrorReason::FlowEvicted)).collect();
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].dst.port(), 10, "A's least recently active flow");
    udp_from_port(&mut pair, 1000, 20);
    assert_eq!(pair.take_out().len(), 1, "A refused with ICMP");
    let events = pair.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].reason(), events[0].uid), (Reason::Block(BlockReason::ClientLimit), Some(APP_A)));
}

#[test]
fn pending_dns_is_bounded_per_app() {
    let mut pair = app_pair();
    // App A floods queries to a resolver that does not answer: its share is a quarter of the pending slots.
    for i in 0..600u16 {
        let mut p = Vec::new();
        let query = dns_query(&format!("q{i}.example.org"));
        let port = 1000 + (i % 1000);
        PacketBuilder::ipv4(A, [198, 18, 53, 53], 64).udp(port, 53).write(&mut p, &query).expect("builds");
        pair.engine.handle_tun_packet(pair.now, &p, &mut pair.up);
        pair.settle();
    }
    let share = pair.engine.pending_dns_share();
    assert_eq!(share, 256);
    assert_eq!(pair.up.udp_sent.len(), share / 2 + share, "half a share by address, then A's own share");
    assert_eq!(pair.up.owner_lookups, 600 - share / 2, "no owner asked below half a share");
    pair.take_out();
    pair.events();
    // B's query (same address) still goes up.
    let mut p = Vec::new();
    PacketBuilder::ipv4(A, [198, 18, 53, 53], 64)
        .udp(2000, 53)
        .write(&mut p, &dns_query("www.example.org"))
        .expect("builds");
    pair.engine.handle_tun_packet(pair.now, &p, &mut pair.up);
    pair.settle();
    assert_eq!(pair.up.udp_sent.len(), share / 2 + share + 1, "B's query went upstream");
    assert!(pair.take_out().is_empty(), "no SERVFAIL for B");
}

#[test]
fn budgets_by_app_ask_no_owner_on_a_normal_day_and_reuse_a_blocked_app_lookup() {
    let mut pair = app_pair();
    pair.connect(NORMAL, 22);
    pair.udp(NORMAL, 7, b"x");
    pair.udp([198, 18, 53, 53], 53, &dns_query("www.example.org"));
    assert_eq!(pair.up.owner_lookups, 0, "tables far from half full");
    // With an app blocked every new flow's owner is asked anyway: once, and the budget counts by it even with the
    // table below half full.
    pair.engine.set_blocked_uids(HashSet::from([99]));
    send_syn(&mut pair, A, 1500);
    send_syn(&mut pair, A, 2500);
    assert_eq!(pair.up.owner_lookups, 2, "one lookup per flow");
    assert_eq!(pair.engine.budgets.usage(Client::App(APP_A)).tcp, 1);
    assert_eq!(pair.engine.budgets.usage(Client::App(APP_B)).tcp, 1);
}

/// QUIC flows held for the rest of their ClientHello take room in the UDP table: with half of it holding, the
/// owner of the next flow is asked.
#[test]
fn held_quic_flows_count_toward_the_udp_table() {
    let mut pair = app_pair();
    pair.engine.config.max_udp_flows = 4;
    let hello = super::inspect_tests::client_hello("www.example.org", 2500);
    for src_port in [1000u16, 1001] {
        let first = client_initial(VERSION_1, &[src_port as u8; 8], 0, &crypto_frame(0, &hello[..1100]), 1200);
        let mut p = Vec::new();
        PacketBuilder::ipv4(PHONE, NORMAL, 64).udp(src_port, 443).write(&mut p, &first).expect("builds");
        pair.raw(&p);
    }
    assert_eq!((pair.engine.quic.holding(), pair.up.owner_lookups), (2, 0));
    udp_from_port(&mut pair, 1002, 7);
    assert_eq!(pair.up.owner_lookups, 1, "half the table holds: the owner is asked");
}
