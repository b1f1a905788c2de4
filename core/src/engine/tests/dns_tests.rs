//! Engine tests of the DNS forwarder: each query on a socket of its own under an unpredictable id, answers taken
//! only when id and question match, dead resolvers skipped, truncated answers fetched again over TCP, and the
//! user's Private DNS server let through.

use super::*;

const RESOLVER_A: &str = "198.18.0.1:53";
const RESOLVER_B: &str = "[fd00:6877::1]:53";
const FALLBACK: &str = "198.18.9.9:53";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// A pair whose engine forwards to `upstreams`, then `fallbacks`.
fn pair_with(upstreams: &[&str], fallbacks: &[&str]) -> Pair {
    let mut pair = Pair::new();
    let config = EngineConfig {
        dns_upstreams: upstreams.iter().map(|s| addr(s)).collect(),
        dns_fallbacks: fallbacks.iter().map(|s| addr(s)).collect(),
        dns_seed: [7; 32],
        ..EngineConfig::default()
    };
    pair.engine = Engine::new(config, Arc::clone(pair.engine.policy()), pair.now, 1_700_000_000_000);
    pair
}

/// Upstream's answer to `forwarded` (QR set) with `n` A records 198.18.1.0, 198.18.1.1, …
fn answer_with(forwarded: &[u8], n: u8) -> Vec<u8> {
    let mut answer = forwarded.to_vec();
    answer[2] |= 0x80;
    answer[7] = n;
    for i in 0..n {
        answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 18, 1, i]);
    }
    answer
}

fn id_of(msg: &[u8]) -> u16 {
    u16::from_be_bytes([msg[0], msg[1]])
}

/// The phone's UDP answers so far.
fn udp_answers(pair: &mut Pair) -> Vec<Vec<u8>> {
    pair.take_out().iter().map(|p| udp_payload(p)).collect()
}

#[test]
fn each_query_gets_its_own_socket_and_an_unpredictable_id() {
    let mut pair = pair_with(&[RESOLVER_A], &[]);
    for i in 0..200 {
        pair.udp([198, 18, 53, 53], 53, &dns_query(&format!("n{i}.example.org")));
    }
    let flows: HashSet<FlowId> = pair.up.udp_opened.iter().map(|(f, _)| *f).collect();
    assert_eq!(flows.len(), 200, "one upstream socket per query");
    assert!(pair.up.udp_opened.iter().all(|(_, dst)| *dst == addr(RESOLVER_A)));
    let ids: Vec<u16> = pair.up.udp_sent.iter().map(|(_, q)| id_of(q)).collect();
    let distinct: HashSet<u16> = ids.iter().copied().collect();
    assert!(distinct.len() > 190, "ids repeat: {} distinct of 200", distinct.len());
    let steps: HashSet<u16> = ids.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    assert!(steps.len() > 190, "ids follow a pattern");
    // Answered: the socket is closed at once.
    let (flow, forwarded) = pair.up.udp_sent[7].clone();
    pair.engine.on_udp_datagram(pair.now, flow, &answer_with(&forwarded, 1));
    pair.settle();
    assert_eq!(udp_answers(&mut pair).len(), 1);
    assert_eq!(pair.up.udp_closed, vec![flow], "the answered query's socket is closed");
    // Timed out: every other socket is closed too.
    pair.wait(pair.engine.config.dns_timeout);
    pair.wait(pair.engine.config.dns_timeout);
    let closed: HashSet<FlowId> = pair.up.udp_closed.iter().copied().collect();
    let opened: HashSet<FlowId> = pair.up.udp_opened.iter().map(|(f, _)| *f).collect();
    assert_eq!(closed, opened, "no socket left open");
}

#[test]
fn forged_answers_are_refused_and_the_real_one_still_delivered() {
    let mut pair = pair_with(&[RESOLVER_A], &[]);
    pair.udp([198, 18, 53, 53], 53, &dns_query("www.example.org"));
    let (flow, forwarded) = pair.up.udp_sent[0].clone();
    let real_id = id_of(&forwarded);
    let forge = |pair: &mut Pair, msg: &[u8]| {
        pair.engine.on_udp_datagram(pair.now, flow, msg);
        pair.settle();
    };
    // The right question under a wrong id.
    let mut wrong_id = answer_with(&forwarded, 1);
    wrong_id[..2].copy_from_slice(&real_id.wrapping_add(1).to_be_bytes());
    forge(&mut pair, &wrong_id);
    // The right id with a wrong name, type or class.
    let mut other_name = answer_with(&forwarded, 1);
    other_name[13] = b'x';
    let mut other_type = answer_with(&forwarded, 1);
    other_type[12 + 17] = 28;
    let mut other_class = answer_with(&forwarded, 1);
    other_class[12 + 19] = 3;
    for forged in [&other_name, &other_type, &other_class] {
        forge(&mut pair, forged);
    }
    // Every id, with a wrong question (what an off-path attacker spraying ids sends).
    let mut spray = answer_with(&dns_query("www.example.com"), 1);
    for id in 0..=u16::MAX {
        spray[..2].copy_from_slice(&id.to_be_bytes());
        forge(&mut pair, &spray);
    }
    // A query echoed back (QR clear) is no answer either.
    forge(&mut pair, &forwarded);
    assert!(udp_answers(&mut pair).is_empty(), "a forged answer reached the phone");
    assert!(pair.up.udp_closed.is_empty(), "the query still waits on its socket");
    // The real answer, with the name in another letter case (names compare case-insensitively).
    let mut real = answer_with(&forwarded, 1);
    real[13..16].copy_from_slice(b"WWW");
    forge(&mut pair, &real);
    let answers = udp_answers(&mut pair);
    assert_eq!(answers.len(), 1, "the real answer is delivered");
    assert_eq!(&answers[0][..2], &[0x12, 0x34], "with the phone's id");
    assert_eq!(&answers[0][answers[0].len() - 4..], &[198, 18, 1, 0]);
    assert!(pair.engine.dns_cache.names_for(IpAddr::from([198, 18, 1, 0]), pair.now).any(|n| n == "www.example.org"));
}

#[test]
fn an_answer_on_another_querys_socket_is_refused() {
    let mut pair = pair_with(&[RESOLVER_A], &[]);
    pair.udp([198, 18, 53, 53], 53, &dns_query("www.example.org"));
    pair.udp([198, 18, 53, 53], 53, &dns_query("shared-good.example.org"));
    let (first, forwarded) = pair.up.udp_sent[0].clone();
    let (second, _) = pair.up.udp_sent[1].clone();
    pair.engine.on_udp_datagram(pair.now, second, &answer_with(&forwarded, 1));
    pair.settle();
    assert!(udp_answers(&mut pair).is_empty(), "matched against the other query's id and question");
    pair.engine.on_udp_datagram(pair.now, first, &answer_with(&forwarded, 1));
    pair.settle();
    assert_eq!(udp_answers(&mut pair).len(), 1);
}

#[test]
fn a_silent_resolver_is_skipped_and_the_query_retried_on_the_next_within_the_budget() {
    let mut pair = pair_with(&[RESOLVER_A, RESOLVER_B], &[FALLBACK]);
    pair.udp([198, 18, 53, 53], 53, &dns_query("www.example.org"));
    assert_eq!(pair.up.udp_opened[0].1, addr(RESOLVER_A));
    // Half the budget without an answer: the same query goes to the next resolver on a new socket.
    pair.wait(pair.engine.config.dns_timeout / 2 - Duration::from_millis(1));
    assert_eq!(pair.up.udp_opened.len(), 1, "the first resolver has half the budget");
    pair.wait(Duration::from_millis(1));
    assert_eq!(pair.up.udp_opened.len(), 2);
    assert_eq!(pair.up.udp_opened[1].1, addr(RESOLVER_B));
    assert!(pair.up.udp_closed.contains(&pair.up.udp_opened[0].0), "the first try's socket is closed");
    let (flow, forwarded) = pair.up.udp_sent[1].clone();
    assert_ne!(id_of(&forwarded), id_of(&pair.up.udp_sent[0].1), "a new id");
    pair.engine.on_udp_datagram(pair.now, flow, &answer_with(&forwarded, 1));
    pair.settle();
    assert_eq!(udp_answers(&mut pair).len(), 1, "answered within the 4 s budget");
    // The silent resolver is skipped for its backoff...
    pair.udp([198, 18, 53, 53], 53, &dns_query("a.example.org"));
    assert_eq!(pair.up.udp_opened[2].1, addr(RESOLVER_B), "the down resolver is skipped");
    // ...and tried again after it.
    pair.now += Duration::from_secs(6);
    pair.udp([198, 18, 53, 53], 53, &dns_query("b.example.org"));
    assert_eq!(pair.up.udp_opened[3].1, addr(RESOLVER_A), "tried again after the backoff");
}

#[test]
fn when_the_networks_resolvers_fail_the_fallback_answers() {
    let mut pair = pair_with(&[RESOLVER_A, RESOLVER_B], &[FALLBACK]);
    pair.udp([198, 18, 53, 53], 53, &dns_query("www.example.org"));
    let a = pair.up.udp_opened[0].0;
    pair.engine.on_udp_error(pair.now, a, io::ErrorKind::ConnectionRefused.into());
    pair.settle();
    let b = pair.up.udp_opened[1].0;
    assert_eq!(pair.up.udp_opened[1].1, addr(RESOLVER_B));
    pair.engine.on_udp_error(pair.now, b, io::Error::from_raw_os_error(101));
    pair.settle();
    assert_eq!(udp_answers(&mut pair).len(), 1, "two tries, then SERVFAIL");
    pair.udp([198, 18, 53, 53], 53, &dns_query("www.example.org"));
    assert_eq!(pair.up.udp_opened[2].1, addr(FALLBACK), "both network resolvers are down: the fallback");
}

#[test]
fn new_network_resolvers_take_over() {
    let mut pair = pair_with(&[RESOLVER_A], &[FALLBACK]);
    pair.engine.set_dns_upstreams(vec![addr(RESOLVER_B)]);
    pair.udp([198, 18, 53, 53], 53, &dns_query("www.example.org"));
    assert_eq!(pair.up.udp_opened[0].1, addr(RESOLVER_B));
    pair.engine.set_dns_upstreams(Vec::new());
    pair.udp([198, 18, 53, 53], 53, &dns_query("www.example.org"));
    assert_eq!(pair.up.udp_opened[1].1, addr(FALLBACK), "no network resolver known: the fallback");
}

/// The length-prefixed query the engine wrote on DNS-over-TCP flow `flow`, without the prefix.
fn tcp_query(pair: &Pair, flow: FlowId) -> Vec<u8> {
    let framed = &pair.up.written[&flow];
    assert_eq!(usize::from(u16::from_be_bytes([framed[0], framed[1]])), framed.len() - 2, "one framed query");
    framed[2..].to_vec()
}

fn framed(msg: &[u8]) -> Vec<u8> {
    let mut out = (msg.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(msg);
    out
}

#[test]
fn a_truncated_answer_is_fetched_over_tcp_and_cut_to_fit_the_phone() {
    let mut pair = pair_with(&[RESOLVER_A], &[]);
    pair.udp([198, 18, 53, 53], 53, &dns_query("big.example.org"));
    let (flow, forwarded) = pair.up.udp_sent[0].clone();
    let mut truncated = answer_with(&forwarded, 0);
    truncated[2] |= 0x02;
    pair.engine.on_udp_datagram(pair.now, flow, &truncated);
    pair.settle();
    assert!(udp_answers(&mut pair).is_empty(), "the truncated answer is not passed on");
    let &(tcp_flow, dst) = pair.up.connects.last().expect("a TCP retry");
    assert_eq!(dst, addr(RESOLVER_A), "to the same resolver");
    pair.engine.on_tcp_connected(pair.now, tcp_flow, Ok(()));
    pair.settle();
    let query = tcp_query(&pair, tcp_flow);
    // 100 A records: 1,633 bytes, more than the 512 a client without EDNS accepts.
    let full = answer_with(&query, 100);
    pair.up.to_read.insert(tcp_flow, framed(&full));
    pair.upstream_readable(tcp_flow);
    pair.engine.poll(pair.now);
    pair.settle();
    let answers = udp_answers(&mut pair);
    assert_eq!(answers.len(), 1);
    let cut = &answers[0];
    assert!(cut.len() <= 512, "{} bytes", cut.len());
    assert_eq!(cut[2] & 0x02, 0x02, "TC set: the phone asks again over TCP");
    assert_eq!(&cut[..2], &[0x12, 0x34]);
    assert_eq!(pair.up.closed, vec![(tcp_flow, false)], "the TCP socket is closed");
    // The full answer was learnt: its last address maps to the name.
    assert!(pair.engine.dns_cache.names_for(IpAddr::from([198, 18, 1, 99]), pair.now).any(|n| n == "big.example.org"));
}

#[test]
fn dns_over_tcp_from_the_phone_goes_upstream_over_tcp_and_comes_back_whole() {
    let mut pair = pair_with(&[RESOLVER_A], &[]);
    let h = pair.connect([198, 18, 53, 53], 53);
    pair.phone_tcp(h).send_slice(&framed(&dns_query("big.example.org"))).expect("send");
    pair.drive();
    assert!(pair.up.udp_sent.is_empty(), "not over UDP");
    let &(flow, dst) = pair.up.connects.last().expect("a TCP connection upstream");
    assert_eq!(dst, addr(RESOLVER_A));
    pair.engine.on_tcp_connected(pair.now, flow, Ok(()));
    pair.settle();
    let query = tcp_query(&pair, flow);
    let full = answer_with(&query, 100);
    // In two pieces, as TCP may deliver it.
    let bytes = framed(&full);
    pair.up.to_read.insert(flow, bytes[..700].to_vec());
    pair.upstream_readable(flow);
    pair.drive();
    pair.up.to_read.insert(flow, bytes[700..].to_vec());
    pair.upstream_readable(flow);
    pair.drive();
    let mut got = Vec::new();
    let s = pair.phone_tcp(h);
    while s.can_recv() {
        s.recv(|b| {
            got.extend_from_slice(b);
            (b.len(), ())
        })
        .expect("recv");
    }
    assert_eq!(got.len(), full.len() + 2, "the whole answer");
    assert_eq!(&got[2..4], &[0x12, 0x34], "the phone's id");
    assert_eq!(&got[4..], &full[2..]);
}

/// A TLS record carrying a ClientHello that names `name`.
fn tls_hello(name: &str) -> Vec<u8> {
    let hello = super::inspect_tests::client_hello(name, 300);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hello.len() as u16).to_be_bytes());
    record.extend_from_slice(&hello);
    record
}

/// (action, reason, host) of the events so far.
fn verdicts(pair: &mut Pair) -> Vec<(Action, Reason, Option<String>)> {
    pair.events().into_iter().map(|e| (e.action(), e.reason(), e.host)).collect()
}

const PRIVATE_DNS: &str = "dns.example.net";

#[test]
fn dns_over_tls_to_the_private_dns_server_is_let_through_and_other_dot_refused() {
    let mut pair = pair_with(&[RESOLVER_A], &[]);
    pair.engine.config.log_allowed = true;
    // Without Private DNS, DoT is refused at the SYN.
    let h = pair.connect(NORMAL, 853);
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed);
    assert_eq!(verdicts(&mut pair), vec![(Action::Block, Reason::Block(BlockReason::DnsOverTls), None)]);
    // With it (as Android reports it: any case, maybe a trailing dot), DoT naming that host is dialled.
    pair.engine.set_private_dns_server(Some("DNS.Example.net.".into()));
    let h = pair.connect(NORMAL, 853);
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Established, "read up to the ClientHello");
    assert!(pair.up.connects.is_empty());
    pair.phone_tcp(h).send_slice(&tls_hello(PRIVATE_DNS)).expect("send");
    pair.drive();
    assert_eq!(pair.up.connects, vec![(pair.up.connects[0].0, SocketAddr::from((NORMAL, 853)))], "dialled");
    assert_eq!(
        verdicts(&mut pair),
        vec![(Action::Allow, Reason::Allow(AllowReason::PrivateDns), Some(PRIVATE_DNS.into()))]
    );
    // DoT to any other server is still refused, after its ClientHello; so is one without a name.
    for hello in
        [tls_hello("dns.google"), include_bytes!("../../inspect/testdata/client_hello_openssl_no_sni.bin").to_vec()]
    {
        let h = pair.connect(NORMAL, 853);
        pair.phone_tcp(h).send_slice(&hello).expect("send");
        pair.drive();
        assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "refused");
    }
    assert_eq!(pair.up.connects.len(), 1, "never dialled");
    // Identical refusals fold into one event and a summary (`repeats`): count the attempts they stand for.
    pair.engine.flush_folded_events(pair.now);
    let refused = pair.events();
    assert_eq!(refused.iter().map(|e| e.repeats.unwrap_or(1)).sum::<u64>(), 2, "{refused:?}");
    assert!(
        refused.iter().all(|e| (e.action(), e.reason()) == (Action::Block, Reason::Block(BlockReason::DnsOverTls))),
        "{refused:?}"
    );
    // Private DNS off again: refused at the SYN.
    pair.engine.set_private_dns_server(None);
    let h = pair.connect(NORMAL, 853);
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed);
}

#[test]
fn dns_over_tls_without_a_name_is_let_through_to_the_address_dns_gave_the_private_dns_server() {
    let mut pair = pair_with(&[RESOLVER_A], &[]);
    pair.engine.set_private_dns_server(Some(PRIVATE_DNS.into()));
    pair.udp([198, 18, 53, 53], 53, &dns_query(PRIVATE_DNS));
    let (flow, forwarded) = pair.up.udp_sent[0].clone();
    pair.engine.on_udp_datagram(pair.now, flow, &answer_with(&forwarded, 1));
    pair.settle();
    let no_sni = include_bytes!("../../inspect/testdata/client_hello_openssl_no_sni.bin");
    let h = pair.connect([198, 18, 1, 0], 853);
    pair.phone_tcp(h).send_slice(no_sni).expect("send");
    pair.drive();
    assert_eq!(pair.up.connects.len(), 1, "dialled: the address is the Private DNS server's");
}

#[test]
fn dns_over_quic_and_http3_to_the_private_dns_server_are_let_through_and_other_doq_refused() {
    use crate::inspect::quic::seal::{client_initial, crypto_frame};
    use crate::inspect::quic::VERSION_1;
    let initial = |name: &str| {
        let hello = super::inspect_tests::client_hello(name, 400);
        client_initial(VERSION_1, &[3; 8], 0, &crypto_frame(0, &hello), 1200)
    };
    let mut pair = pair_with(&[RESOLVER_A], &[]);
    pair.engine.config.log_allowed = true;
    pair.udp(NORMAL, 853, &initial(PRIVATE_DNS));
    assert_eq!(pair.take_out().len(), 1, "without Private DNS, DNS over QUIC is refused");
    assert!(pair.up.udp_opened.is_empty());
    pair.events();
    pair.engine.set_private_dns_server(Some(PRIVATE_DNS.into()));
    pair.udp([198, 18, 1, 5], 853, &initial(PRIVATE_DNS));
    pair.udp([198, 18, 1, 6], 443, &initial(PRIVATE_DNS));
    let opened: Vec<SocketAddr> = pair.up.udp_opened.iter().map(|(_, a)| *a).collect();
    assert_eq!(opened, vec![SocketAddr::from(([198, 18, 1, 5], 853)), SocketAddr::from(([198, 18, 1, 6], 443))]);
    assert_eq!(
        verdicts(&mut pair),
        vec![(Action::Allow, Reason::Allow(AllowReason::PrivateDns), Some(PRIVATE_DNS.into())); 2],
        "DoQ and DoH3 to the Private DNS server"
    );
    pair.udp([198, 18, 1, 7], 853, &initial("dns.google"));
    assert_eq!(pair.take_out().len(), 1, "ICMP: DNS over QUIC to another server");
    assert_eq!(pair.up.udp_opened.len(), 2);
    assert_eq!(
        verdicts(&mut pair),
        vec![(Action::Block, Reason::Block(BlockReason::DnsOverTls), Some("dns.google".into()))]
    );
}

/// `query` with an EDNS OPT record offering a 4,096-byte UDP payload.
fn with_edns(mut query: Vec<u8>) -> Vec<u8> {
    query[11] = 1;
    query.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    query
}

/// An answer to `forwarded` exactly `len` bytes long: its question and one NULL record padding it out.
fn answer_of_len(forwarded: &[u8], len: usize) -> Vec<u8> {
    let mut at = 12;
    while forwarded[at] != 0 {
        at += 1 + usize::from(forwarded[at]);
    }
    let question_end = at + 5;
    let mut answer = forwarded[..question_end].to_vec();
    answer[2] |= 0x80;
    answer[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]);
    let rdlen = len - question_end - 12;
    answer.extend_from_slice(&[0xc0, 12, 0, 10, 0, 1, 0, 0, 0, 60]);
    answer.extend_from_slice(&(rdlen as u16).to_be_bytes());
    answer.resize(len, 0);
    answer
}

/// An answer that fills the tun MTU after the IP and UDP headers (20 + 8 bytes on IPv4, 40 + 8 on IPv6) reaches
/// the phone whole; one byte more is cut to its question with TC set, so the phone asks again over TCP.
#[test]
fn udp_answers_are_cut_only_past_the_tun_mtu() {
    for (v6, fits) in [(false, 1500 - 28), (true, 1500 - 48)] {
        for (len, cut) in [(fits, false), (fits + 1, true)] {
            let mut pair = pair_with(&[RESOLVER_A], &[]);
            let query = with_edns(dns_query("big.example.org"));
            let mut packet = Vec::new();
            let builder = if v6 {
                PacketBuilder::ipv6(PHONE6, SERVER6, 64)
            } else {
                PacketBuilder::ipv4(PHONE, [198, 18, 53, 53], 64)
            };
            builder.udp(5353, 53).write(&mut packet, &query).expect("builds");
            pair.raw(&packet);
            let (flow, forwarded) = pair.up.udp_sent[0].clone();
            pair.engine.on_udp_datagram(pair.now, flow, &answer_of_len(&forwarded, len));
            pair.settle();
            let answers = udp_answers(&mut pair);
            assert_eq!(answers.len(), 1);
            let label = format!("IPv{} answer of {len} bytes", if v6 { 6 } else { 4 });
            assert_eq!(answers[0][2] & 0x02 != 0, cut, "{label}: TC");
            assert_eq!(answers[0].len() == len, !cut, "{label}: whole");
        }
    }
}

/// The engine's own query for a blocked name's addresses waits as a phone's would: half the budget on the first
/// try, and its failure is counted (never reported to the user, whose query was answered NXDOMAIN).
#[test]
fn a_learning_query_waits_its_budget_and_its_failure_is_counted() {
    let mut pair = pair_with(&[RESOLVER_A], &[]);
    pair.udp([198, 18, 53, 53], 53, &dns_query("tracking.intl.miui.com"));
    assert_eq!(pair.up.udp_sent.len(), 1, "the learning query");
    pair.take_out();
    pair.events();
    pair.wait(pair.engine.config.dns_timeout / 2 - Duration::from_millis(1));
    assert!(pair.up.udp_closed.is_empty(), "still waiting for its answer");
    pair.wait(pair.engine.config.dns_timeout);
    assert_eq!(pair.engine.stats().upstream_errors, 1);
    assert!(pair.events().is_empty() && pair.take_out().is_empty(), "nothing for the phone");
}

/// Queries are counted whatever becomes of them; what cannot be read as a query is counted as malformed and
/// what cannot be an answer to the query in flight as dropped.
#[test]
fn queries_malformed_queries_and_forged_answers_are_counted() {
    let mut pair = pair_with(&[RESOLVER_A], &[]);
    pair.udp([198, 18, 53, 53], 53, &dns_query("www.example.org"));
    pair.udp([198, 18, 53, 53], 53, &dns_query("tracking.intl.miui.com"));
    pair.udp([198, 18, 53, 53], 53, b"\x12\x34 not a query");
    let stats = pair.engine.stats();
    assert_eq!((stats.dns_queries, stats.malformed), (3, 1));
    let (flow, forwarded) = pair.up.udp_sent[0].clone();
    let mut forged = answer_with(&forwarded, 1);
    forged[0] ^= 0xff;
    pair.engine.on_udp_datagram(pair.now, flow, &forged);
    pair.engine.on_udp_datagram(pair.now, flow, &forged);
    assert_eq!(pair.engine.stats().dropped, 2);
    // A blocked app's query is a query too.
    pair.up.owner = Some(10_123);
    pair.engine.set_blocked_uids(HashSet::from([10_123]));
    pair.udp([198, 18, 53, 53], 53, &dns_query("www.example.org"));
    assert_eq!(pair.engine.stats().dns_queries, 4);
}

/// An answer that echoes the query's id and question but whose records cannot be read is counted as malformed
/// and the phone gets SERVFAIL rather than waiting.
#[test]
fn an_unreadable_answer_is_counted_and_answered_servfail() {
    let mut pair = pair_with(&[RESOLVER_A], &[]);
    pair.udp([198, 18, 53, 53], 53, &dns_query("www.example.org"));
    let (flow, forwarded) = pair.up.udp_sent[0].clone();
    let mut answer = answer_with(&forwarded, 1);
    answer.truncate(answer.len() - 3);
    pair.engine.on_udp_datagram(pair.now, flow, &answer);
    pair.settle();
    let answers = udp_answers(&mut pair);
    assert_eq!(answers.len(), 1);
    assert_eq!((&answers[0][..2], answers[0][3] & 0x0f), (&[0x12, 0x34][..], 2), "SERVFAIL with the phone's id");
    assert_eq!(pair.engine.stats().malformed, 1);
}
