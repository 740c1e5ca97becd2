//! NAT traversal cores (sans-IO). For now only the RFC 7983 first-byte
//! demultiplexer that lets STUN, DTLS, TURN ChannelData and RTP share one
//! UDP socket; ICE glue, the STUN server and the TURN core come later.

pub mod demux;

pub use demux::{PacketClass, classify};
