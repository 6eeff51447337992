//! The control channel's reliability layer: every control message (hard
//! reset, TLS records) carries a message packet-id; the receiver acks each
//! id it gets (in a P_ACK_V1 or piggybacked on its next control packet),
//! delivers payloads in id order, and the sender retransmits with backoff
//! until acked. OpenVPN's `reliable.c` works this way; the window sizes
//! here stay within what its peers accept (it buffers 12 packets per
//! direction, ours sends at most [`SEND_WINDOW`] unacked).
//!
//! Bounded: at most [`SEND_WINDOW`] messages in flight (more wait in a
//! queue the session bounds), at most [`RECV_WINDOW`] buffered out of
//! order, at most [`MAX_OWED_ACKS`] acks owed. Time is a parameter.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Message ids in flight: at most this many past the oldest unacked one.
pub const SEND_WINDOW: u32 = 6;
/// Message ids accepted ahead of the next one to deliver.
pub const RECV_WINDOW: u32 = 8;
/// Acks remembered for sending; more are dropped (the peer retransmits
/// and we ack again).
pub const MAX_OWED_ACKS: usize = 32;
/// Later packets acked before an unacked one is retransmitted early
/// (OpenVPN's `N_ACK_RETRANSMIT`).
pub const EARLY_RETRANSMIT_ACKS: u8 = 3;

/// One message waiting for its ack.
#[derive(Debug)]
struct Pending {
    id: u32,
    payload: Vec<u8>,
    /// When to (re)send: `None` until first sent.
    due: Option<Instant>,
    timeout: Duration,
    later_acks: u8,
}

/// The sending half: assigns message ids, retransmits until acked.
#[derive(Debug)]
pub struct SendQueue {
    next_id: u32,
    pending: VecDeque<Pending>,
    initial_timeout: Duration,
    max_timeout: Duration,
    retransmits: u64,
}

/// A message the queue wants on the wire now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due<'a> {
    /// Its message packet-id.
    pub id: u32,
    /// Its payload.
    pub payload: &'a [u8],
}

impl SendQueue {
    /// A queue whose first message gets id `first_id`, retransmitted after
    /// `initial_timeout`, doubling up to `max_timeout`.
    #[must_use]
    pub fn new(first_id: u32, initial_timeout: Duration, max_timeout: Duration) -> Self {
        Self {
            next_id: first_id,
            pending: VecDeque::new(),
            initial_timeout,
            max_timeout,
            retransmits: 0,
        }
    }

    /// Queues a message; returns its id.
    pub fn push(&mut self, payload: Vec<u8>) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.pending.push_back(Pending {
            id,
            payload,
            due: None,
            timeout: self.initial_timeout,
            later_acks: 0,
        });
        id
    }

    /// Messages queued or in flight.
    #[must_use]
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether everything sent has been acked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Retransmissions so far.
    #[must_use]
    pub fn retransmits(&self) -> u64 {
        self.retransmits
    }

    /// The peer acked `id`. Unknown or repeated ids are ignored.
    pub fn handle_ack(&mut self, id: u32) {
        let Some(pos) = self.pending.iter().position(|p| p.id == id) else {
            return;
        };
        self.pending.remove(pos);
        // Earlier messages still unacked after later ones were: probably
        // lost; count towards an early retransmit.
        for p in self.pending.iter_mut().take(pos) {
            if p.due.is_some() {
                p.later_acks = p.later_acks.saturating_add(1);
            }
        }
    }

    /// The next message to put on the wire at `now` (never sent, due for
    /// retransmission, or overtaken by [`EARLY_RETRANSMIT_ACKS`] acks),
    /// within the send window; schedules its next retransmission.
    pub fn poll_due(&mut self, now: Instant) -> Option<Due<'_>> {
        let max = self.max_timeout;
        let first = self.pending.front()?.id;
        let p = self
            .pending
            .iter_mut()
            .take_while(|p| in_window(first, p.id))
            .find(|p| match p.due {
                None => true,
                Some(t) => t <= now || p.later_acks >= EARLY_RETRANSMIT_ACKS,
            })?;
        if p.due.is_some() {
            self.retransmits += 1;
            p.timeout = (p.timeout * 2).min(max);
        }
        p.due = Some(now + p.timeout);
        p.later_acks = 0;
        Some(Due {
            id: p.id,
            payload: &p.payload,
        })
    }

    /// When the next retransmission is due (`None`: nothing in flight).
    /// Messages never sent are due at once: see [`Self::has_unsent`].
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let first = self.pending.front()?.id;
        self.pending
            .iter()
            .take_while(|p| in_window(first, p.id))
            .filter_map(|p| p.due)
            .min()
    }

    /// Whether a message in the window has never been sent.
    #[must_use]
    pub fn has_unsent(&self) -> bool {
        let Some(first) = self.pending.front().map(|p| p.id) else {
            return false;
        };
        self.pending
            .iter()
            .take_while(|p| in_window(first, p.id))
            .any(|p| p.due.is_none())
    }
}

/// Whether `id` may be in flight while `oldest` is unacked: the window
/// spans ids, not packets, because the receiver buffers by id
/// (`reliable_wont_break_sequentiality` in OpenVPN).
fn in_window(oldest: u32, id: u32) -> bool {
    id.wrapping_sub(oldest) < SEND_WINDOW
}

/// What became of a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// New, buffered for in-order delivery, and acked.
    New,
    /// Already delivered or buffered: acked again (our ack was lost).
    Duplicate,
    /// Beyond the receive window: dropped without an ack.
    OutOfWindow,
}

/// The receiving half: acks, reorders, delivers in id order.
#[derive(Debug)]
pub struct RecvQueue {
    next_id: u32,
    buffered: BTreeMap<u32, Vec<u8>>,
    owed: VecDeque<u32>,
}

impl RecvQueue {
    /// A queue that delivers `first_id` first.
    #[must_use]
    pub fn new(first_id: u32) -> Self {
        Self {
            next_id: first_id,
            buffered: BTreeMap::new(),
            owed: VecDeque::new(),
        }
    }

    /// Takes in message `id`.
    pub fn handle(&mut self, id: u32, payload: &[u8]) -> Received {
        let ahead = id.wrapping_sub(self.next_id);
        let r = if ahead >= RECV_WINDOW {
            // Behind next_id (wrapped: huge) is a duplicate when it is
            // within a window's reach backwards; anything else is noise.
            if self.next_id.wrapping_sub(id) <= RECV_WINDOW * 4 {
                Received::Duplicate
            } else {
                return Received::OutOfWindow;
            }
        } else if let std::collections::btree_map::Entry::Vacant(e) = self.buffered.entry(id) {
            e.insert(payload.to_vec());
            Received::New
        } else {
            Received::Duplicate
        };
        if !self.owed.contains(&id) {
            if self.owed.len() == MAX_OWED_ACKS {
                self.owed.pop_front();
            }
            self.owed.push_back(id);
        }
        r
    }

    /// The next payload in order, if it has arrived.
    pub fn pop(&mut self) -> Option<Vec<u8>> {
        let p = self.buffered.remove(&self.next_id)?;
        self.next_id = self.next_id.wrapping_add(1);
        Some(p)
    }

    /// Whether acks are owed.
    #[must_use]
    pub fn owes_acks(&self) -> bool {
        !self.owed.is_empty()
    }

    /// Takes up to `max` owed acks, oldest first.
    pub fn take_acks(&mut self, max: usize) -> impl Iterator<Item = u32> + '_ {
        let n = max.min(self.owed.len());
        self.owed.drain(..n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn send_window_backoff_and_acks() {
        let t0 = Instant::now();
        let mut q = SendQueue::new(0, T, Duration::from_secs(4));
        for i in 0..8u8 {
            q.push(vec![i]);
        }
        // Only the window goes out.
        let mut sent = Vec::new();
        while let Some(d) = q.poll_due(t0) {
            sent.push(d.id);
        }
        assert_eq!(sent, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(q.poll_timeout(), Some(t0 + T));
        // Acks open the window.
        q.handle_ack(0);
        q.handle_ack(0);
        q.handle_ack(99);
        assert_eq!(q.poll_due(t0).map(|d| d.id), Some(6));
        assert_eq!(q.poll_due(t0), None);
        // Retransmission after the timeout, then backoff 2 s, 4 s, capped 4 s.
        assert_eq!(q.poll_due(t0 + T).map(|d| d.id), Some(1));
        let mut t = t0 + T;
        for want in [2, 4, 4] {
            while q.poll_due(t).is_some() {}
            let next = q.poll_timeout().unwrap();
            assert!(next >= t + Duration::from_secs(1));
            t += Duration::from_secs(want);
            assert!(q.poll_due(t).is_some(), "retransmit after {want} s");
        }
        assert!(q.retransmits() >= 4);
        for id in 1..8 {
            q.handle_ack(id);
        }
        assert!(q.is_empty());
        assert_eq!(q.poll_timeout(), None);
    }

    #[test]
    fn early_retransmit_after_three_later_acks() {
        let t0 = Instant::now();
        let mut q = SendQueue::new(1, Duration::from_secs(10), Duration::from_secs(10));
        for i in 0..4u8 {
            q.push(vec![i]);
        }
        while q.poll_due(t0).is_some() {}
        q.handle_ack(2);
        q.handle_ack(3);
        assert_eq!(q.poll_due(t0), None);
        q.handle_ack(4);
        assert_eq!(q.poll_due(t0).map(|d| d.id), Some(1));
    }

    #[test]
    fn receive_reorders_duplicates_and_bounds() {
        let mut r = RecvQueue::new(1);
        assert_eq!(r.handle(3, b"c"), Received::New);
        assert_eq!(r.pop(), None);
        assert_eq!(r.handle(1, b"a"), Received::New);
        assert_eq!(r.handle(2, b"b"), Received::New);
        assert_eq!(r.handle(2, b"b"), Received::Duplicate);
        let got: Vec<_> = std::iter::from_fn(|| r.pop()).collect();
        assert_eq!(got, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(r.handle(1, b"a"), Received::Duplicate);
        assert_eq!(r.handle(4 + RECV_WINDOW, b"x"), Received::OutOfWindow);
        assert_eq!(r.handle(u32::MAX - 1000, b"x"), Received::OutOfWindow);
        let acks: Vec<_> = r.take_acks(2).collect();
        assert_eq!(acks, vec![3, 1]);
        let acks: Vec<_> = r.take_acks(8).collect();
        assert_eq!(acks, vec![2]);
        assert!(!r.owes_acks());
        for id in 4..4 + RECV_WINDOW {
            r.handle(id, b"");
        }
        for id in 4..200 {
            r.handle(id, b"");
            let _ = r.pop();
        }
        assert!(r.owed.len() <= MAX_OWED_ACKS);
        assert!(r.buffered.len() <= RECV_WINDOW as usize);
    }

    /// Two queues over a lossy, reordering link still deliver everything
    /// in order.
    #[test]
    fn lossy_link_delivers_in_order() {
        let mut t = Instant::now();
        let mut tx = SendQueue::new(0, Duration::from_millis(100), Duration::from_millis(800));
        let mut rx = RecvQueue::new(0);
        for i in 0..50u8 {
            tx.push(vec![i]);
        }
        let mut delivered = Vec::new();
        let mut n = 0u32;
        while delivered.len() < 50 {
            let mut batch = Vec::new();
            while let Some(d) = tx.poll_due(t) {
                batch.push((d.id, d.payload.to_vec()));
            }
            batch.reverse();
            for (id, p) in batch {
                n += 1;
                if n.is_multiple_of(3) {
                    continue; // lost
                }
                rx.handle(id, &p);
            }
            while let Some(p) = rx.pop() {
                delivered.push(p[0]);
            }
            let acks: Vec<u32> = rx.take_acks(4).collect();
            for (i, a) in acks.into_iter().enumerate() {
                if !(n + u32::try_from(i).unwrap()).is_multiple_of(5) {
                    tx.handle_ack(a);
                }
            }
            t += Duration::from_millis(100);
            assert!(n < 10_000, "no progress");
        }
        assert_eq!(delivered, (0..50).collect::<Vec<u8>>());
    }
}
