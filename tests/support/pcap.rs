//! A minimal classic-pcap writer (the libpcap file format, LINKTYPE_ETHERNET)
//! that wraps each payload in Ethernet II + IPv4 + UDP, so that tshark can
//! dissect bytes we produced without any network in between.
//!
//! Lengths are exact; the IPv4 header checksum is computed and the UDP
//! checksum is 0, which RFC 768 defines as "not computed" for IPv4.

use std::net::SocketAddrV4;

/// Ethernet II link type in the pcap global header.
const LINKTYPE_ETHERNET: u32 = 1;
/// First frame's timestamp (2023-11-14T22:13:20Z); each frame is 1 ms later,
/// so the file is identical on every run.
const EPOCH_SECS: u32 = 1_700_000_000;

/// An in-memory pcap file.
pub struct PcapWriter {
    buf: Vec<u8>,
    frames: u32,
}

impl PcapWriter {
    pub fn new() -> Self {
        let mut buf = Vec::new();
        buf.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes()); // magic: microsecond timestamps
        buf.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
        buf.extend_from_slice(&4u16.to_le_bytes());
        buf.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        buf.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        buf.extend_from_slice(&65_535u32.to_le_bytes()); // snaplen
        buf.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        PcapWriter { buf, frames: 0 }
    }

    /// Appends one UDP datagram `src → dst` carrying `payload`.
    pub fn udp(&mut self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) {
        let udp_len = u16::try_from(8 + payload.len()).expect("payload fits one UDP datagram");
        let ip_len = udp_len.checked_add(20).expect("payload fits one IPv4 packet");

        let mut frame = Vec::with_capacity(14 + usize::from(ip_len));
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // destination MAC (locally administered)
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // source MAC
        frame.extend_from_slice(&0x0800u16.to_be_bytes()); // EtherType IPv4

        let mut ip = [0u8; 20];
        ip[0] = 0x45; // version 4, 5-word header
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[4..6].copy_from_slice(&(self.frames as u16).to_be_bytes()); // identification
        ip[8] = 64; // TTL
        ip[9] = 17; // UDP
        ip[12..16].copy_from_slice(&src.ip().octets());
        ip[16..20].copy_from_slice(&dst.ip().octets());
        let checksum = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&checksum.to_be_bytes());
        frame.extend_from_slice(&ip);

        frame.extend_from_slice(&src.port().to_be_bytes());
        frame.extend_from_slice(&dst.port().to_be_bytes());
        frame.extend_from_slice(&udp_len.to_be_bytes());
        frame.extend_from_slice(&0u16.to_be_bytes()); // checksum not computed
        frame.extend_from_slice(payload);

        let len = u32::try_from(frame.len()).expect("frame length fits u32");
        self.buf.extend_from_slice(&(EPOCH_SECS + self.frames / 1000).to_le_bytes());
        self.buf.extend_from_slice(&((self.frames % 1000) * 1000).to_le_bytes()); // microseconds
        self.buf.extend_from_slice(&len.to_le_bytes()); // captured length
        self.buf.extend_from_slice(&len.to_le_bytes()); // original length
        self.buf.extend_from_slice(&frame);
        self.frames += 1;
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// The Internet checksum (RFC 1071) of an IPv4 header whose checksum field is 0.
fn ipv4_checksum(header: &[u8; 20]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
