//! An optional trace of where a new connection's time goes, for `bench/trace.py` (the latency tail, issue 16.3).
//!
//! Off unless the environment names a file in `HUSHWALL_TRACE_LATENCY`; then every event-loop iteration and
//! every TCP packet that marks a step of a connection (the phone's SYN, SYN|ACK written back, the phone's
//! first payload, payload written to the phone) and every upstream connect completion and readable socket is
//! written there as a line of tab-separated fields, the first one `CLOCK_MONOTONIC` in nanoseconds (the
//! clock the benchmark's client uses, so both traces line up). When off, the loop only tests an `Option`.

use crate::sockets::{Conn, Sockets};
use hushwall_core::engine::FlowId;
use nix::time::{clock_gettime, ClockId};
use std::fs::File;
use std::io::{BufWriter, Write};

/// The environment variable naming the trace file.
const VARIABLE: &str = "HUSHWALL_TRACE_LATENCY";

/// The open trace.
pub(crate) struct Trace {
    out: BufWriter<File>,
    /// Packets read from and written to the tun in this iteration.
    packets: (usize, usize),
}

impl Trace {
    /// The trace named by the environment, if any (logged and off if the file cannot be created).
    pub(super) fn from_env() -> Option<Trace> {
        let path = std::env::var_os(VARIABLE)?;
        match File::create(&path) {
            Ok(file) => Some(Trace { out: BufWriter::new(file), packets: (0, 0) }),
            Err(e) => {
                log::warn!("{VARIABLE}: cannot create {}: {e}", path.to_string_lossy());
                None
            }
        }
    }

    /// Writes one line: the time now and `fields`.
    pub(super) fn line(&mut self, fields: std::fmt::Arguments<'_>) {
        let _ = writeln!(self.out, "{}\t{fields}", now_ns());
    }

    /// Has `handle` pass a packet read from the tun to the engine; notes it if it is a step of a TCP connection
    /// (and then when the engine was done with it, and whether it dialled: `sockets` open before, and after as
    /// `handle` returns).
    pub(super) fn handle_tun_packet(&mut self, packet: &[u8], sockets: usize, handle: impl FnOnce(&[u8]) -> usize) {
        self.packets.0 += 1;
        let step = match tcp_step(packet) {
            Some((flags, port, _)) if flags & SYN != 0 && flags & ACK == 0 => Some(("syn_in", port)),
            Some((_, port, 1..)) => Some(("data_in", port)),
            _ => None,
        };
        if let Some((what, port)) = step {
            self.line(format_args!("{what}\t{port}"));
        }
        let after = handle(packet);
        if let Some((what, port)) = step {
            let dialled = if after > sockets { "dialled" } else { "-" };
            self.line(format_args!("{what}_done\t{port}\t{dialled}"));
        }
    }

    /// Notes an upstream socket's readiness: a TCP connect completing, or data (or an error) to read.
    pub(super) fn socket_event(&mut self, flow: FlowId, readable: bool, sockets: &Sockets) {
        match sockets.conns.get(&flow) {
            Some(Conn::Tcp { connecting: true, .. }) => self.line(format_args!("connected\t{}", flow.0)),
            Some(Conn::Tcp { .. }) if readable => self.line(format_args!("up_readable\t{}", flow.0)),
            _ => {}
        }
    }

    /// Notes a packet written to the tun (`how`: inline or handed to the writer thread) if it is a step of a TCP
    /// connection.
    pub(crate) fn tun_out(&mut self, packet: &[u8], how: &str) {
        self.packets.1 += 1;
        if let Some((flags, port, len)) = tcp_step_out(packet) {
            match (flags & SYN != 0, len) {
                (true, _) => self.line(format_args!("synack_out\t{port}\t{how}")),
                (false, 1..) => self.line(format_args!("data_out\t{port}\t{len}\t{how}")),
                _ => {}
            }
        }
    }

    /// Ends an iteration: notes it and writes what is buffered (the trace is for short benchmark runs).
    pub(super) fn end_iteration(&mut self) {
        let (read, written) = std::mem::take(&mut self.packets);
        self.line(format_args!("done\t{read}\t{written}"));
        let _ = self.out.flush();
    }
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// `CLOCK_MONOTONIC` in nanoseconds.
fn now_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec()).unwrap_or(0))
        .unwrap_or(0)
}

/// An IPv4 or IPv6 TCP segment's flags, source port and payload length (no IPv6 extension headers).
fn tcp_step(packet: &[u8]) -> Option<(u8, u16, usize)> {
    let (flags, src, _, len) = tcp_fields(packet)?;
    Some((flags, src, len))
}

/// As [`tcp_step`], with the destination port (the phone's, for packets to it).
fn tcp_step_out(packet: &[u8]) -> Option<(u8, u16, usize)> {
    let (flags, _, dst, len) = tcp_fields(packet)?;
    Some((flags, dst, len))
}

/// Flags, source port, destination port and payload length of a TCP segment in an IP packet.
fn tcp_fields(packet: &[u8]) -> Option<(u8, u16, u16, usize)> {
    let (tcp, total) = match packet.first()? >> 4 {
        4 if *packet.get(9)? == 6 => {
            let header = usize::from(packet.first()? & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
            (packet.get(header..total.min(packet.len()))?, total.checked_sub(header)?)
        }
        6 if *packet.get(6)? == 6 => {
            let payload = usize::from(u16::from_be_bytes([*packet.get(4)?, *packet.get(5)?]));
            (packet.get(40..)?, payload)
        }
        _ => return None,
    };
    let src = u16::from_be_bytes([*tcp.first()?, *tcp.get(1)?]);
    let dst = u16::from_be_bytes([*tcp.get(2)?, *tcp.get(3)?]);
    let offset = usize::from(tcp.get(12)? >> 4) * 4;
    Some((*tcp.get(13)?, src, dst, total.checked_sub(offset)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_steps_of_a_tcp_segment() {
        // IPv4, 20-byte header, TCP from port 40000 to 8080, 20-byte header, SYN, then 5 bytes of payload.
        let mut packet = vec![0x45, 0, 0, 45, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        packet.extend_from_slice(&[0x9c, 0x40, 0x1f, 0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, SYN, 0, 0, 0, 0, 0, 0]);
        packet.extend_from_slice(b"hello");
        assert_eq!(tcp_fields(&packet), Some((SYN, 40000, 8080, 5)));
        assert_eq!(tcp_fields(&packet[..30]), None, "cut short");
        assert_eq!(tcp_fields(&[0x45]), None);
    }
}
