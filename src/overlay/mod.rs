//! The RELOAD overlay: the CHORD-RELOAD topology plug-in (RFC 6940 §10) and
//! the sans-IO node machine that routes, joins, updates and leaves with it.

pub mod chord;
