//! Simple Reliability (RFC 6940 §6.6.3.2), the sending half: a small AIMD
//! window of unACKed DATA frames, retransmission after an RTO of 500 ms
//! doubling per try under a fresh sequence number, and a verdict of
//! "unresponsive" after [`SR_MAX_TRANSMISSIONS`] transmissions went
//! unACKed. The receiving half is [`crate::wire::framing::AckTracker`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::wire::framing::{FramedMessage, acked_sequences};

/// §6.6.3.2: the initial retransmission timeout.
pub const SR_INITIAL_RTO: Duration = Duration::from_millis(500);
/// §6.6.3.2: transmissions of one frame (0, 0.5, 1.5, 3.5, 7.5 s) before
/// the link is given up, one RTO after the last.
pub const SR_MAX_TRANSMISSIONS: u32 = 5;
/// Unacknowledged frames a new link may have out at once.
const SR_INITIAL_WINDOW: usize = 4;
/// The window's cap: the ACK bitmap covers 32 frames.
const SR_MAX_WINDOW: usize = 32;

/// No ACK came for a frame after its last transmission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unresponsive;

/// The Simple Reliability sender (§6.6.3.2), sans-IO: time comes in as
/// `now`. Frames are retransmitted under new sequence numbers, so every
/// ACK names exactly one transmission.
#[derive(Debug)]
pub struct SrSender {
    next_seq: u32,
    next_id: u64,
    inflight: BTreeMap<u64, InFlight>,
    by_seq: BTreeMap<u32, u64>,
    window: usize,
}

#[derive(Debug)]
struct InFlight {
    message: Vec<u8>,
    seqs: Vec<u32>,
    sent: u32,
    rto: Duration,
    deadline: Instant,
}

impl Default for SrSender {
    fn default() -> Self {
        Self::new()
    }
}

impl SrSender {
    pub fn new() -> Self {
        SrSender {
            next_seq: 0,
            next_id: 0,
            inflight: BTreeMap::new(),
            by_seq: BTreeMap::new(),
            window: SR_INITIAL_WINDOW,
        }
    }

    /// Whether the window has room for another frame.
    pub fn can_send(&self) -> bool {
        self.inflight.len() < self.window
    }

    /// Whether every frame sent was ACKed.
    pub fn is_idle(&self) -> bool {
        self.inflight.is_empty()
    }

    /// Frames a message for its first transmission.
    pub fn send(&mut self, now: Instant, message: Vec<u8>) -> FramedMessage {
        let id = self.next_id;
        self.next_id += 1;
        let seq = self.take_seq(id);
        let frame = FramedMessage::Data { sequence: seq, message: message.clone() };
        self.inflight.insert(
            id,
            InFlight { message, seqs: vec![seq], sent: 1, rto: SR_INITIAL_RTO, deadline: now + SR_INITIAL_RTO },
        );
        frame
    }

    /// An ACK arrived: every transmission it covers is done. Each newly
    /// ACKed frame widens the window by one (additive increase).
    pub fn on_ack(&mut self, ack_sequence: u32, received: u32) {
        for seq in acked_sequences(ack_sequence, received) {
            let Some(id) = self.by_seq.remove(&seq) else { continue };
            if let Some(done) = self.inflight.remove(&id) {
                for s in done.seqs {
                    self.by_seq.remove(&s);
                }
                self.window = (self.window + 1).min(SR_MAX_WINDOW);
            }
        }
    }

    /// When the next retransmission is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.inflight.values().map(|f| f.deadline).min()
    }

    /// Retransmits what is due, doubling each one's RTO and halving the
    /// window; fails once a frame's last transmission went unACKed.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<Vec<FramedMessage>, Unresponsive> {
        let due: Vec<u64> = self.inflight.iter().filter(|(_, f)| f.deadline <= now).map(|(id, _)| *id).collect();
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(due.len());
        for id in due {
            let sent = self.inflight.get(&id).map_or(0, |f| f.sent);
            if sent >= SR_MAX_TRANSMISSIONS {
                return Err(Unresponsive);
            }
            let seq = self.take_seq(id);
            if let Some(f) = self.inflight.get_mut(&id) {
                f.sent += 1;
                f.rto *= 2;
                f.deadline = now + f.rto;
                f.seqs.push(seq);
                out.push(FramedMessage::Data { sequence: seq, message: f.message.clone() });
            }
        }
        self.window = (self.window / 2).max(1);
        Ok(out)
    }

    fn take_seq(&mut self, id: u64) -> u32 {
        let seq = self.next_seq;
        // §6.6.2: one sequence space per connection, +1 per frame.
        self.next_seq = self.next_seq.wrapping_add(1);
        self.by_seq.insert(seq, id);
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::framing::AckTracker;
    use std::collections::VecDeque;
    use std::time::Instant as StdInstant;

    fn seq_of(f: &FramedMessage) -> u32 {
        match f {
            FramedMessage::Data { sequence, .. } => *sequence,
            FramedMessage::Ack { .. } => panic!("not data"),
        }
    }

    #[test]
    fn window_limits_frames_in_flight_and_acks_open_it() {
        let t0 = StdInstant::now();
        let mut s = SrSender::new();
        let mut seqs = Vec::new();
        while s.can_send() {
            seqs.push(seq_of(&s.send(t0, vec![1])));
        }
        assert_eq!(seqs, vec![0, 1, 2, 3]);
        // One ACK for 3 whose bitmap says 2 and 0 arrived too; 1 is missing.
        s.on_ack(3, 0b101);
        assert!(s.can_send());
        assert_eq!(s.inflight.len(), 1);
        s.on_ack(1, 0);
        assert!(s.is_idle());
        assert_eq!(s.window, SR_INITIAL_WINDOW + 4);
    }

    #[test]
    fn retransmits_with_new_sequence_and_backoff_then_gives_up() {
        let t0 = StdInstant::now();
        let mut s = SrSender::new();
        s.send(t0, b"hello".to_vec());
        assert_eq!(s.poll_timeout(), Some(t0 + SR_INITIAL_RTO));
        assert!(s.handle_timeout(t0 + Duration::from_millis(499)).unwrap().is_empty());
        // Transmissions at 0, 0.5, 1.5, 3.5, 7.5 s; unresponsive at 15.5 s.
        let mut at = Vec::new();
        let gave_up = loop {
            let Some(now) = s.poll_timeout() else { panic!("nothing in flight") };
            match s.handle_timeout(now) {
                Ok(frames) => {
                    assert_eq!(frames.len(), 1);
                    assert_eq!(seq_of(&frames[0]), at.len() as u32 + 1);
                    at.push((now - t0).as_millis());
                }
                Err(Unresponsive) => break now,
            }
        };
        assert_eq!(at, vec![500, 1500, 3500, 7500]);
        assert_eq!((gave_up - t0).as_millis(), 15_500);
    }

    #[test]
    fn an_ack_for_any_transmission_completes_the_frame() {
        let t0 = StdInstant::now();
        let mut s = SrSender::new();
        s.send(t0, vec![9]);
        let re = s.handle_timeout(t0 + SR_INITIAL_RTO).unwrap();
        assert_eq!(seq_of(&re[0]), 1);
        assert_eq!(s.window, SR_INITIAL_WINDOW / 2);
        // The first transmission was only late: its ACK settles it.
        s.on_ack(0, 0);
        assert!(s.is_idle());
        assert!(s.by_seq.is_empty());
        assert_eq!(s.poll_timeout(), None);
        // An ACK for a sequence never sent changes nothing.
        s.on_ack(77, u32::MAX);
        assert!(s.is_idle());
    }

    #[test]
    fn a_lossy_path_delivers_everything_with_sr() {
        // Sender and receiver machines over a channel that loses 15 % of
        // DATA frames and 15 % of ACKs (seeded), in virtual time.
        use rand::rngs::StdRng;
        use rand::{RngExt, SeedableRng};
        let mut rng = StdRng::seed_from_u64(6940);
        let t0 = StdInstant::now();
        let mut s = SrSender::new();
        let mut r = AckTracker::default();
        let mut to_send: VecDeque<Vec<u8>> = (0u8..40).map(|i| vec![i]).collect();
        let mut got = std::collections::BTreeSet::new();
        let mut lost = 0u32;
        let mut now = t0;
        let mut deliver = |f: FramedMessage, s: &mut SrSender, got: &mut std::collections::BTreeSet<u8>| {
            if rng.random::<f64>() < 0.15 {
                lost += 1;
                return;
            }
            let FramedMessage::Data { sequence, message } = f else { panic!() };
            got.insert(message[0]);
            let FramedMessage::Ack { ack_sequence, received } = r.on_data(sequence) else { panic!() };
            if rng.random::<f64>() < 0.15 {
                lost += 1;
            } else {
                s.on_ack(ack_sequence, received);
            }
        };
        for _ in 0..1000 {
            while s.can_send() {
                let Some(m) = to_send.pop_front() else { break };
                let f = s.send(now, m);
                deliver(f, &mut s, &mut got);
            }
            if to_send.is_empty() && s.is_idle() {
                break;
            }
            now = s.poll_timeout().unwrap();
            for f in s.handle_timeout(now).unwrap() {
                deliver(f, &mut s, &mut got);
            }
        }
        assert!(s.is_idle() && to_send.is_empty());
        assert_eq!(got, (0u8..40).collect());
        assert!(lost > 5, "the channel lost only {lost}");
    }
}
