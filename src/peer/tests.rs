//! Peers driven against each other in memory.
