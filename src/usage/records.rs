//! RFC 7904 §3: SIP registrations as overlay records.

use std::net::SocketAddr;

use crate::overlay::Command;
use crate::sip::NodeRef;
use crate::wire::WireError;
use crate::wire::attach::{IceCandidate, OverlayLinkType};
use crate::wire::codec::Codec;
use crate::wire::kinds::SipRegistration;
use crate::wire::storage::{DataValue, DictionaryEntry, StoredDataValue};
use crate::wire::types::Destination;
use crate::wire::{KindId, NodeId, ResourceId};

/// Lifetime of the tombstone a removed registration leaves (RFC 6940 §7.2.1).
pub const TOMBSTONE_S: u32 = 300;

/// The SIP side's name for a node.
pub fn node_ref(id: NodeId) -> NodeRef {
    NodeRef(id.0)
}

/// The Node-ID behind a [`NodeRef`].
pub fn node_id(r: NodeRef) -> NodeId {
    NodeId(r.0)
}

/// The Resource Name of an AOR (§3.1): the AOR without its `sip:` scheme,
/// as phones and the edge write it (`user@domain`).
pub fn aor_resource(aor: &str) -> &[u8] {
    aor.strip_prefix("sip:").unwrap_or(aor).as_bytes()
}

/// This node's registration entry (§3.2): key = our Node-ID, a Route whose
/// destination list is this node (we serve the phone ourselves).
pub fn registration_value(node: NodeId) -> Result<StoredDataValue, WireError> {
    let reg = SipRegistration::Route { contact_prefs: vec![], destination_list: vec![Destination::Node(node)] };
    Ok(StoredDataValue::Dictionary(reg.to_entry(node)?))
}

/// Our entry with exists=false: the removal of a registration.
pub fn tombstone_value(node: NodeId) -> StoredDataValue {
    StoredDataValue::Dictionary(DictionaryEntry {
        key: node.0.to_vec(),
        value: DataValue { exists: false, value: Vec::new() },
    })
}

/// Store `value` under `aor`, signed as the AOR's own user certificate
/// (§3: the AOR's owner writes its registrations).
pub fn store_command(aor: &str, value: StoredDataValue, lifetime_s: u32) -> Command {
    Command::StoreAs {
        user: aor.strip_prefix("sip:").unwrap_or(aor).to_owned(),
        resource_name: aor_resource(aor).to_vec(),
        kind: KindId::SIP_REGISTRATION,
        value,
        lifetime_s,
    }
}

/// Fetch every registration entry of `aor`.
pub fn fetch_command(aor: &str) -> Command {
    Command::Fetch { resource: ResourceId::from_name(aor_resource(aor)), kind: KindId::SIP_REGISTRATION }
}

/// The nodes serving an AOR's live registrations, in the order fetched
/// (§3.2: a Route's last Node destination serves the device; an entry
/// whose value does not decode, or a URI registration, is skipped; the
/// dictionary key names the storing node when the route names none).
pub fn serving_nodes(values: &[StoredDataValue]) -> Vec<NodeRef> {
    let mut out = Vec::new();
    for v in values {
        let StoredDataValue::Dictionary(e) = v else { continue };
        if !e.value.exists {
            continue;
        }
        let Ok(key) = <[u8; 16]>::try_from(e.key.as_slice()) else { continue };
        let Ok(SipRegistration::Route { destination_list, .. }) = SipRegistration::from_bytes(&e.value.value) else {
            continue;
        };
        let node = destination_list
            .iter()
            .rev()
            .find_map(|d| match d {
                Destination::Node(n) => Some(*n),
                _ => None,
            })
            .unwrap_or(NodeId(key));
        let r = node_ref(node);
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// Where an AppAttach answer says the node serves SIP: its candidate for
/// node-to-node SIP over TLS.
pub fn sip_candidate(candidates: &[IceCandidate]) -> Option<SocketAddr> {
    candidates.iter().find(|c| c.overlay_link == OverlayLinkType::TLS_TCP_FH_NO_ICE).map(|c| c.addr_port.0)
}

/// One SIP-REGISTRATION dictionary entry for people: the node that stored
/// it and where it points.
pub fn describe_registration(e: &DictionaryEntry) -> String {
    let node = hex::encode(&e.key);
    match SipRegistration::from_bytes(&e.value.value) {
        Ok(SipRegistration::Route { destination_list, .. }) => {
            let route: Vec<String> = destination_list
                .iter()
                .map(|d| match d {
                    Destination::Node(n) => n.to_string(),
                    other => format!("{other:?}"),
                })
                .collect();
            format!("node {node} route {}", route.join(" "))
        }
        Ok(SipRegistration::Uri(uri)) => format!("node {node} uri {}", String::from_utf8_lossy(&uri)),
        Ok(SipRegistration::Unknown { ty, .. }) => format!("node {node} unknown type {ty}"),
        Err(e) => format!("node {node} undecodable ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: u128) -> NodeId {
        NodeId::from_u128(i)
    }

    #[test]
    fn a_route_resolves_to_its_last_node_and_tombstones_are_skipped() {
        let mine = registration_value(n(1)).unwrap();
        let relayed = SipRegistration::Route {
            contact_prefs: vec![],
            destination_list: vec![Destination::Node(n(7)), Destination::Node(n(8))],
        };
        let relayed = StoredDataValue::Dictionary(relayed.to_entry(n(2)).unwrap());
        let gone = tombstone_value(n(3));
        let uri = StoredDataValue::Dictionary(SipRegistration::Uri(b"sip:x@y".to_vec()).to_entry(n(4)).unwrap());
        let got = serving_nodes(&[mine.clone(), relayed, gone, uri, mine]);
        assert_eq!(got, vec![node_ref(n(1)), node_ref(n(8))]);
    }

    #[test]
    fn commands_use_the_aor_without_scheme() {
        match store_command("sip:alice@example.org", tombstone_value(n(1)), TOMBSTONE_S) {
            Command::StoreAs { user, resource_name, kind, lifetime_s, .. } => {
                assert_eq!(user, "alice@example.org");
                assert_eq!(resource_name, b"alice@example.org");
                assert_eq!(kind, KindId::SIP_REGISTRATION);
                assert_eq!(lifetime_s, TOMBSTONE_S);
            }
            other => panic!("{other:?}"),
        }
        match fetch_command("alice@example.org") {
            Command::Fetch { resource, .. } => assert_eq!(resource, ResourceId::from_name(b"alice@example.org")),
            other => panic!("{other:?}"),
        }
    }
}
