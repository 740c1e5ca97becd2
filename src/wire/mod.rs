//! RFC 6940 wire codec: sans-IO, no clock, no sockets.
//!
//! Layout of a message (§6.3): `ForwardingHeader | MessageContents | SecurityBlock`.
//! Every structure implements [`Codec`]; decoding never panics and returns a
//! typed [`WireError`] on malformed input.

pub mod codec;
pub mod types;

pub mod fragment;
pub mod framing;
pub mod header;
pub mod message;

pub mod attach;
pub mod error;
pub mod kinds;
pub mod security_block;
pub mod storage;
pub mod topology;

pub use codec::{Codec, Reader, WireError, Writer};
pub use header::{ForwardingHeader, ForwardingOption, Fragment};
pub use message::{Body, Message, MessageCode, MessageContents, MessageExtension, RawMessage};
pub use types::{Destination, IpAddressPort, KindId, NODE_ID_LEN, NodeId, ResourceId, overlay_hash};
