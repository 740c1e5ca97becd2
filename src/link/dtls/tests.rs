//! Two DTLS machines wired together in memory.

#[cfg(test)]
use super::*;
use crate::link::testing::{new_ca, node, reload_message, security, start, wall};
use crate::link::{Event, PeerIdentity};
use crate::wire::fragment::{Reassembler, Reassembly};

struct Pair {
    a: DtlsLink,
    b: DtlsLink,
    now: Instant,
    ev_a: Vec<Event>,
    ev_b: Vec<Event>,
}

fn pair_with(sa: &Arc<LinkSecurity>, sb: &Arc<LinkSecurity>, expected: Option<NodeId>) -> Pair {
    let now = start();
    let ca = DtlsContexts::new(sa, &[1; 32]).unwrap();
    let cb = DtlsContexts::new(sb, &[2; 32]).unwrap();
    let a = DtlsLink::client(&ca, sa, now, wall(), expected).unwrap();
    let b = DtlsLink::server(&cb, sb, now, wall(), b"127.0.0.1:4000").unwrap();
    Pair { a, b, now, ev_a: Vec::new(), ev_b: Vec::new() }
}

impl Pair {
    /// Carries datagrams both ways until both are quiet; `drop_ab` decides
    /// (by index among A→B datagrams) which ones the network loses.
    fn run(&mut self, mut drop_ab: impl FnMut(usize) -> bool) -> usize {
        let mut sent = 0;
        loop {
            let mut moved = false;
            while let Some(d) = self.a.poll_transmit() {
                moved = true;
                if !drop_ab(sent) {
                    self.b.handle_datagram(self.now, &d);
                }
                sent += 1;
            }
            while let Some(d) = self.b.poll_transmit() {
                moved = true;
                self.a.handle_datagram(self.now, &d);
            }
            self.ev_a.extend(std::iter::from_fn(|| self.a.poll_event()));
            self.ev_b.extend(std::iter::from_fn(|| self.b.poll_event()));
            if !moved {
                return sent;
            }
        }
    }

    fn deliver_all(&mut self) {
        self.run(|_| false);
    }

    fn messages(ev: &mut Vec<Event>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        ev.retain(|e| match e {
            Event::Message(m) => {
                out.push(m.clone());
                false
            }
            _ => true,
        });
        out
    }
}

fn connected(ev: &[Event]) -> Option<&PeerIdentity> {
    ev.iter().find_map(|e| if let Event::Connected(p) = e { Some(p) } else { None })
}

fn connected_pair() -> Pair {
    let ca = new_ca();
    let (sa, sb) = (security(&ca, node(1)), security(&ca, node(2)));
    let mut p = pair_with(&sa, &sb, Some(node(2)));
    p.deliver_all();
    assert!(connected(&p.ev_a).is_some() && connected(&p.ev_b).is_some(), "{:?} {:?}", p.ev_a, p.ev_b);
    p.ev_a.clear();
    p.ev_b.clear();
    p
}

#[test]
fn two_machines_handshake_and_exchange_messages() {
    let ca = new_ca();
    let (sa, sb) = (security(&ca, node(1)), security(&ca, node(2)));
    let mut p = pair_with(&sa, &sb, Some(node(2)));
    p.deliver_all();
    assert_eq!(connected(&p.ev_a).unwrap().node_ids, vec![node(2)]);
    let at_b = connected(&p.ev_b).unwrap();
    assert_eq!(at_b.node_ids, vec![node(1)]);
    assert_eq!(at_b.user.as_deref(), Some("n1@links.example.org"));
    for i in 0..40u8 {
        p.a.send(p.now, vec![i; 100]).unwrap();
        p.b.send(p.now, vec![i; 200]).unwrap();
    }
    p.deliver_all();
    assert_eq!(Pair::messages(&mut p.ev_b), (0..40u8).map(|i| vec![i; 100]).collect::<Vec<_>>());
    assert_eq!(Pair::messages(&mut p.ev_a), (0..40u8).map(|i| vec![i; 200]).collect::<Vec<_>>());
    // Everything was ACKed: no retransmission is pending.
    assert_eq!(p.a.poll_timeout(), None);
    assert_eq!(p.b.poll_timeout(), None);
}

#[test]
fn long_messages_travel_as_fragments_and_oversized_ones_are_refused() {
    let mut p = connected_pair();
    let msg = reload_message(4000);
    p.a.send(p.now, msg.clone()).unwrap();
    let datagrams = p.run(|_| false);
    assert!(datagrams >= 4);
    let pieces = Pair::messages(&mut p.ev_b);
    assert_eq!(pieces.len(), 4);
    let mut r = Reassembler::new(1 << 20, 1 << 22);
    let whole = pieces.iter().find_map(|piece| match r.push(p.now, piece).unwrap() {
        Reassembly::Complete(m) => Some(m),
        _ => None,
    });
    assert_eq!(whole, Some(msg));
    assert!(matches!(p.a.send(p.now, vec![0; 6000]), Err(LinkError::TooLarge(6000))));
    // Not a RELOAD message and too long for one datagram: cannot be fragmented.
    assert!(matches!(p.a.send(p.now, vec![0; MAX_FRAME_PAYLOAD + 1]), Err(LinkError::TooLarge(_))));
}

#[test]
fn a_full_send_queue_refuses_messages() {
    let mut p = connected_pair();
    // Nothing is delivered: the window fills, then the queue.
    let mut taken = 0;
    while p.a.send(p.now, vec![1; 10]).is_ok() {
        taken += 1;
        assert!(taken <= 1000, "send never refused");
    }
    assert!(matches!(p.a.send(p.now, vec![1; 10]), Err(LinkError::QueueFull)));
    assert_eq!(taken, OUT_QUEUE + 4, "the initial SR window holds 4 frames");
}

#[test]
fn a_lost_client_hello_is_resent_by_the_dtls_timer() {
    let ca = new_ca();
    let (sa, sb) = (security(&ca, node(1)), security(&ca, node(2)));
    let mut p = pair_with(&sa, &sb, None);
    // The first ClientHello is lost.
    p.run(|i| i == 0);
    assert!(connected(&p.ev_a).is_none());
    // OpenSSL times its retransmission by its own clock (1 s at first):
    // wait for the deadline the machine reports, bounded.
    let limit = p.now + Duration::from_secs(5);
    while connected(&p.ev_b).is_none() {
        let due = p.a.poll_timeout().unwrap();
        assert!(due < limit, "no retransmission before the limit");
        std::thread::sleep(due.saturating_duration_since(start()));
        p.now = due.max(start());
        p.a.handle_timeout(p.now);
        p.deliver_all();
    }
    assert!(connected(&p.ev_a).is_some());
}

#[test]
fn lost_data_frames_are_resent_by_simple_reliability() {
    let mut p = connected_pair();
    p.a.send(p.now, b"first".to_vec()).unwrap();
    // The DATA datagram is lost.
    p.run(|_| true);
    assert!(Pair::messages(&mut p.ev_b).is_empty());
    let due = p.a.poll_timeout().unwrap();
    assert_eq!(due - p.now, crate::link::sr::SR_INITIAL_RTO);
    p.now = due;
    p.a.handle_timeout(p.now);
    p.deliver_all();
    assert_eq!(Pair::messages(&mut p.ev_b), vec![b"first".to_vec()]);
    assert_eq!(p.a.poll_timeout(), None, "the resend was ACKed");
}

#[test]
fn an_unanswering_peer_ends_the_link() {
    let mut p = connected_pair();
    p.a.send(p.now, b"into the void".to_vec()).unwrap();
    while let Some(due) = p.a.poll_timeout() {
        p.now = due;
        p.a.handle_timeout(p.now);
        while p.a.poll_transmit().is_some() {}
    }
    p.ev_a.extend(std::iter::from_fn(|| p.a.poll_event()));
    assert!(matches!(p.ev_a.last(), Some(Event::Closed(r)) if r == "peer unresponsive"));
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let (ca, other) = (new_ca(), new_ca());
    let good = security(&ca, node(2));
    let stranger = security(&other, node(1));
    let mut p = pair_with(&stranger, &good, None);
    p.deliver_all();
    // Each side's check refuses the other's certificate; the dialer (which
    // sees the server's certificate first) says why, the listener hears
    // the alert.
    assert!(connected(&p.ev_a).is_none() && connected(&p.ev_b).is_none());
    assert!(matches!(p.ev_a.last(), Some(Event::Failed(LinkError::Certificate(_)))), "{:?}", p.ev_a);
    assert!(matches!(p.ev_b.last(), Some(Event::Failed(_))), "{:?}", p.ev_b);
    assert!(p.a.is_done() && p.b.is_done());
}

#[test]
fn dialing_the_wrong_node_id_fails() {
    let ca = new_ca();
    let (sa, sb) = (security(&ca, node(1)), security(&ca, node(2)));
    let mut p = pair_with(&sa, &sb, Some(node(9)));
    p.deliver_all();
    assert!(matches!(p.ev_a.last(), Some(Event::Failed(LinkError::WrongNodeId { .. }))), "{:?}", p.ev_a);
}

#[test]
fn close_is_seen_by_the_other_side_after_queued_messages() {
    let mut p = connected_pair();
    p.a.send(p.now, b"last words".to_vec()).unwrap();
    p.a.close(p.now);
    assert!(matches!(p.a.send(p.now, vec![1]), Err(LinkError::Closed)));
    p.deliver_all();
    assert!(matches!(p.ev_a.last(), Some(Event::Closed(r)) if r == "closed locally"), "{:?}", p.ev_a);
    assert_eq!(Pair::messages(&mut p.ev_b), vec![b"last words".to_vec()]);
    assert!(matches!(p.ev_b.last(), Some(Event::Closed(r)) if r == "peer closed the session"), "{:?}", p.ev_b);
}

#[test]
fn an_owner_that_lags_stops_the_acks() {
    let mut p = connected_pair();
    // B's owner takes no events: after EVENT_QUEUE messages B stops ACKing.
    let mut sent = 0;
    while sent < EVENT_QUEUE + 10 {
        if p.a.send(p.now, vec![7; 20]).is_ok() {
            sent += 1;
        }
        while let Some(d) = p.a.poll_transmit() {
            p.b.handle_datagram(p.now, &d);
        }
        while let Some(d) = p.b.poll_transmit() {
            p.a.handle_datagram(p.now, &d);
        }
    }
    assert!(p.b.refused_frames() > 0);
    assert!(p.a.poll_timeout().is_some(), "unACKed frames wait for a resend");
}

#[test]
fn the_client_hello_random_is_read_from_the_wire() {
    let ca = new_ca();
    let sa = security(&ca, node(1));
    let ctx = DtlsContexts::new(&sa, &[1; 32]).unwrap();
    let mut a = DtlsLink::client(&ctx, &sa, start(), wall(), None).unwrap();
    let hello = a.poll_transmit().unwrap();
    assert!(is_client_hello(&hello));
    assert_eq!(client_hello_random(&hello), a.client_random());
    assert!(a.client_random().is_some());
    let mut later_epoch = hello.clone();
    later_epoch[4] = 1;
    assert!(!is_client_hello(&later_epoch));
    assert_eq!(client_hello_random(&later_epoch), None);
    assert!(!is_client_hello(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_eq!(client_hello_random(&hello[..40]), None);
}
