//! Test frames built with etherparse, so headers and checksums come from an independent
//! implementation.
#![allow(dead_code)]

use etherparse::{
    EtherType, Ethernet2Header, IpNumber, Ipv4Header, Ipv4Options, Ipv6FlowLabel, Ipv6Header,
    SlicedPacket, TcpHeader, UdpHeader,
};

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
pub const V4_A: [u8; 4] = [10, 199, 0, 1];
pub const V4_B: [u8; 4] = [10, 199, 0, 2];
pub const V6_A: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const V6_B: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// Linux's usual TCP options on an established connection: NOP NOP timestamps.
pub const TS_OPTS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0x10, 0, 0, 0, 0x20, 0];
/// The MSS of an Ethernet flow with timestamps.
pub const MSS: usize = 1448;

/// A TCP segment to build; `Default` is an ACK of flow A:40000 → B:5201 over IPv4 with
/// timestamps.
#[derive(Clone, Debug)]
pub struct Tcp {
    pub v6: bool,
    pub src_mac: [u8; 6],
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
    pub urg: bool,
    pub cwr: bool,
    pub ece: bool,
    pub options: Vec<u8>,
    pub ip_id: u16,
    pub df: bool,
    pub ttl: u8,
    pub tos: u8,
    pub ipv4_options: Vec<u8>,
    pub flow_label: u32,
    pub payload: Vec<u8>,
}

impl Default for Tcp {
    fn default() -> Tcp {
        Tcp {
            v6: false,
            src_mac: MAC_A,
            sport: 40000,
            dport: 5201,
            seq: 0xfff0_0000,
            ack: 77,
            window: 502,
            syn: false,
            fin: false,
            rst: false,
            psh: false,
            urg: false,
            cwr: false,
            ece: false,
            options: TS_OPTS.to_vec(),
            ip_id: 0xfffe,
            df: true,
            ttl: 64,
            tos: 0,
            ipv4_options: Vec::new(),
            flow_label: 0x12345,
            payload: pattern(MSS, 0),
        }
    }
}

/// Deterministic payload bytes, different for each `salt`.
pub fn pattern(n: usize, salt: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_add(salt).wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

impl Tcp {
    pub fn tcp_header(&self) -> TcpHeader {
        let mut t = TcpHeader::new(self.sport, self.dport, self.seq, self.window);
        t.acknowledgment_number = self.ack;
        t.ack = true;
        t.syn = self.syn;
        t.fin = self.fin;
        t.rst = self.rst;
        t.psh = self.psh;
        t.urg = self.urg;
        t.cwr = self.cwr;
        t.ece = self.ece;
        t.set_options_raw(&self.options).expect("options fit");
        t
    }

    /// The frame, with every checksum computed by etherparse.
    pub fn frame(&self) -> Vec<u8> {
        let mut t = self.tcp_header();
        let l4_len = t.header_len() + self.payload.len();
        let mut out = Vec::new();
        if self.v6 {
            let ip = ipv6(IpNumber::TCP, l4_len, self.flow_label);
            t.checksum = t.calc_checksum_ipv6(&ip, &self.payload).expect("fits");
            eth(EtherType::IPV6, self.src_mac)
                .write(&mut out)
                .expect("vec");
            ip.write(&mut out).expect("vec");
        } else {
            let mut ip = self.ipv4(l4_len);
            t.checksum = t.calc_checksum_ipv4(&ip, &self.payload).expect("fits");
            ip.header_checksum = ip.calc_header_checksum();
            eth(EtherType::IPV4, self.src_mac)
                .write(&mut out)
                .expect("vec");
            ip.write(&mut out).expect("vec");
        }
        t.write(&mut out).expect("vec");
        out.extend_from_slice(&self.payload);
        out
    }

    fn ipv4(&self, l4_len: usize) -> Ipv4Header {
        let mut ip =
            Ipv4Header::new(l4_len as u16, self.ttl, IpNumber::TCP, V4_A, V4_B).expect("fits");
        ip.options = Ipv4Options::try_from(&self.ipv4_options[..]).expect("options fit");
        ip.total_len = (ip.header_len() + l4_len) as u16;
        ip.identification = self.ip_id;
        ip.dont_fragment = self.df;
        ip.dscp = etherparse::IpDscp::try_new(self.tos >> 2).expect("dscp");
        ip
    }

    /// The next segment of the flow: seq advanced by this payload, id by one.
    pub fn next(&self, payload: Vec<u8>) -> Tcp {
        Tcp {
            seq: self.seq.wrapping_add(self.payload.len() as u32),
            ip_id: self.ip_id.wrapping_add(1),
            payload,
            ..self.clone()
        }
    }
}

pub fn eth(ether_type: EtherType, src: [u8; 6]) -> Ethernet2Header {
    Ethernet2Header {
        source: src,
        destination: MAC_B,
        ether_type,
    }
}

pub fn ipv6(next: IpNumber, payload_len: usize, label: u32) -> Ipv6Header {
    Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::try_new(label).expect("20 bits"),
        payload_length: payload_len as u16,
        next_header: next,
        hop_limit: 64,
        source: V6_A,
        destination: V6_B,
    }
}

/// A UDP/IPv4 frame with an etherparse checksum.
pub fn udp_v4(payload: &[u8]) -> Vec<u8> {
    let mut ip =
        Ipv4Header::new((8 + payload.len()) as u16, 64, IpNumber::UDP, V4_A, V4_B).expect("fits");
    ip.header_checksum = ip.calc_header_checksum();
    let u = UdpHeader::with_ipv4_checksum(5353, 53, &ip, payload).expect("fits");
    let mut out = Vec::new();
    eth(EtherType::IPV4, MAC_A).write(&mut out).expect("vec");
    ip.write(&mut out).expect("vec");
    u.write(&mut out).expect("vec");
    out.extend_from_slice(payload);
    out
}

/// An IPv6 frame carrying `l4` (a TCP or UDP header plus payload) behind one extension header
/// of type `ext` (0 hop-by-hop, 60 destination options: 8 bytes of PadN; 44 fragment with the
/// given fragment offset/flags word).
pub fn v6_with_ext(ext: u8, frag_word: u16, proto: u8, l4: &[u8]) -> Vec<u8> {
    let ip = ipv6(IpNumber(ext), 8 + l4.len(), 0);
    let mut out = Vec::new();
    eth(EtherType::IPV6, MAC_A).write(&mut out).expect("vec");
    ip.write(&mut out).expect("vec");
    if ext == 44 {
        let fw = frag_word.to_be_bytes();
        out.extend_from_slice(&[proto, 0, fw[0], fw[1], 0, 0, 0, 1]);
    } else {
        out.extend_from_slice(&[proto, 0, 1, 4, 0, 0, 0, 0]);
    }
    out.extend_from_slice(l4);
    out
}

/// TCP header + payload with an etherparse IPv6 checksum.
pub fn tcp_l4_v6(payload: &[u8]) -> Vec<u8> {
    let mut t = Tcp::default().tcp_header();
    let ip = ipv6(IpNumber::TCP, t.header_len() + payload.len(), 0);
    t.checksum = t.calc_checksum_ipv6(&ip, payload).expect("fits");
    let mut out = t.to_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// UDP header + payload with an etherparse IPv6 checksum.
pub fn udp_l4_v6(payload: &[u8]) -> Vec<u8> {
    let ip = ipv6(IpNumber::UDP, 8 + payload.len(), 0);
    let u = UdpHeader::with_ipv6_checksum(5353, 53, &ip, payload).expect("fits");
    let mut out = u.to_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// What etherparse reads back from a TCP frame.
#[derive(Debug)]
pub struct Parsed {
    pub ip_total_or_payload_len: u16,
    pub ip_id: u16,
    pub ip_header_ok: bool,
    pub df: bool,
    pub tcp: TcpHeader,
    pub tcp_checksum_expected: u16,
    pub payload: Vec<u8>,
}

/// Parses a TCP frame with etherparse and recomputes its checksums independently.
#[track_caller]
pub fn parse_tcp(frame: &[u8]) -> Parsed {
    let p = SlicedPacket::from_ethernet(frame).expect("etherparse parses the frame");
    let Some(etherparse::TransportSlice::Tcp(tcp)) = p.transport else {
        panic!("not TCP");
    };
    let header = tcp.to_header();
    let payload = tcp.payload().to_vec();
    match p.net {
        Some(etherparse::NetSlice::Ipv4(v4)) => {
            let h = v4.header().to_header();
            Parsed {
                ip_total_or_payload_len: h.total_len,
                ip_id: h.identification,
                ip_header_ok: h.header_checksum == h.calc_header_checksum(),
                df: h.dont_fragment,
                tcp_checksum_expected: header.calc_checksum_ipv4(&h, &payload).expect("fits"),
                tcp: header,
                payload,
            }
        }
        Some(etherparse::NetSlice::Ipv6(v6)) => {
            let h = v6.header().to_header();
            Parsed {
                ip_total_or_payload_len: h.payload_length,
                ip_id: 0,
                ip_header_ok: true,
                df: true,
                tcp_checksum_expected: header.calc_checksum_ipv6(&h, &payload).expect("fits"),
                tcp: header,
                payload,
            }
        }
        _ => panic!("not IP"),
    }
}

/// The segments of one flow, `n` payloads of `len` bytes following `first`.
pub fn flow(first: &Tcp, n: usize, len: usize) -> Vec<Tcp> {
    let mut segs = vec![Tcp {
        payload: pattern(len, 0),
        ..first.clone()
    }];
    for i in 1..n {
        let s = segs[i - 1].next(pattern(len, i as u32));
        segs.push(s);
    }
    segs
}
