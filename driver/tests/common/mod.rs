//! What the driver's loop tests share: a tun made of a datagram socketpair, and the phone's TCP segments.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};

pub const PHONE: [u8; 4] = [10, 111, 0, 2];
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;

/// The engine's end of a socketpair as a tun: a datagram on it only wakes the loop; the packets a read returns
/// come from `queue`, so the test decides what one iteration reads.
pub struct QueueTun {
    pub socket: UnixDatagram,
    pub queue: Arc<Mutex<VecDeque<Vec<u8>>>>,
}

impl Read for QueueTun {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut scratch = [0u8; 16];
        while self.socket.recv(&mut scratch).is_ok() {}
        let packet = self.queue.lock().expect("queue").pop_front();
        let packet = packet.ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))?;
        buf[..packet.len()].copy_from_slice(&packet);
        Ok(packet.len())
    }
}

impl Write for QueueTun {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket.send(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for QueueTun {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for chunk in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 TCP segment from the phone.
pub fn segment(src_port: u16, dst: [u8; 4], seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&src_port.to_be_bytes());
    tcp.extend_from_slice(&80u16.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    tcp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&PHONE);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    let pseudo_sum = pseudo.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    let c = checksum(&tcp, pseudo_sum);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    let total = 20 + tcp.len();
    let mut ip = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&PHONE);
    ip.extend_from_slice(&dst);
    let c = checksum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&tcp);
    ip
}

/// The fields of a TCP segment the engine wrote.
pub struct Tcp {
    pub dst_port: u16,
    pub seq: u32,
    pub flags: u8,
}

pub fn tcp(packet: &[u8]) -> Option<Tcp> {
    if packet.first()? >> 4 != 4 || *packet.get(9)? != 6 {
        return None;
    }
    let t = packet.get(usize::from(packet[0] & 0x0f) * 4..)?;
    Some(Tcp {
        dst_port: u16::from_be_bytes([*t.get(2)?, *t.get(3)?]),
        seq: u32::from_be_bytes([*t.get(4)?, *t.get(5)?, *t.get(6)?, *t.get(7)?]),
        flags: *t.get(13)?,
    })
}
