//! Publishing the forwarding table at the cost of the change: two tables,
//! left-right.
//!
//! ```text
//!   Model ─ FibChange log ─► pending ──publish──► spare: replay lag + pending in place
//!                                                 SetFib(spare) to every worker (one Arc)
//!                                                 spare ⇄ live, lag := pending
//!   worker applies SetFib ─► RetiredFib(old live) ─► poll drops it ─► spare unique again
//! ```
//!
//! Workers read the live table through an `Arc` they swap between bursts
//! (`Command::SetFib`, RCU style: the old one travels back and is dropped
//! on the control core). Instead of building a whole new table per change
//! (the routes of every connection: O(N)) or sending incremental route
//! commands to the workers (each worker would repeat the work and grow
//! its tables — allocation — between bursts), the control core keeps the
//! table the workers retired and brings it up to date in place
//! ([`Fib::apply`]): once every worker has given it back (`Arc::get_mut`
//! succeeds), it replays the changes of the publication it missed and the
//! new ones, and is published in turn. The cost is the changes' size
//! (twice), never the table's; the workers' hot path is unchanged (one
//! pointer read per burst, no lock, no allocation).
//!
//! While the workers still hold the spare (the previous publication not
//! applied and polled yet), changes accumulate in `pending` and go out
//! together at the next [`FibSync::publish`] (the dataplane's `poll`):
//! bursts of changes coalesce into one publication.

use std::sync::Arc;

use fib::{Fib, FibChange};

/// The two tables and the changes between them.
#[derive(Debug)]
pub(super) struct FibSync {
    /// What the workers were last sent.
    live: Arc<Fib>,
    /// The table before it; free to change once the workers returned it.
    spare: Arc<Fib>,
    /// Changes `live` has and `spare` lacks.
    lag: Vec<FibChange>,
    /// Changes not published yet.
    pending: Vec<FibChange>,
    /// Changes [`Fib::apply`] refused (a bug upstream).
    refused: u64,
    /// Publications so far.
    published: u64,
}

impl Default for FibSync {
    fn default() -> Self {
        Self {
            live: Arc::new(Fib::default()),
            spare: Arc::new(Fib::default()),
            lag: Vec::new(),
            pending: Vec::new(),
            refused: 0,
            published: 0,
        }
    }
}

impl FibSync {
    /// Queue changes for the next publication.
    pub(super) fn push(&mut self, changes: Vec<FibChange>) {
        if self.pending.is_empty() {
            self.pending = changes;
        } else {
            self.pending.extend(changes);
        }
    }

    /// Whether changes wait to be published.
    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The table the workers were last sent.
    pub(super) fn live(&self) -> &Fib {
        &self.live
    }

    /// Changes the tables refused so far.
    pub(super) fn refused(&self) -> u64 {
        self.refused
    }

    /// Publications so far.
    pub(super) fn published(&self) -> u64 {
        self.published
    }

    /// Bring the spare table up to date and hand it to `send` (which
    /// queues it for every worker). `None`: nothing to publish, or the
    /// workers still hold the spare (try again after the next poll).
    /// When `send` fails the changes stay pending (replaying them again
    /// is harmless: every change sets a prefix or a group outright).
    pub(super) fn publish<T, E>(
        &mut self,
        send: impl FnOnce(Arc<Fib>) -> Result<T, E>,
    ) -> Option<Result<T, E>> {
        if self.pending.is_empty() {
            return None;
        }
        let spare = Arc::get_mut(&mut self.spare)?;
        for c in self.lag.iter().chain(&self.pending) {
            if spare.apply(c).is_err() {
                self.refused += 1;
            }
        }
        match send(Arc::clone(&self.spare)) {
            Ok(t) => {
                std::mem::swap(&mut self.live, &mut self.spare);
                self.lag = std::mem::take(&mut self.pending);
                self.published += 1;
                Some(Ok(t))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use fib::{Target, TunnelId};

    use super::*;

    fn insert(p: &str, t: u32) -> FibChange {
        FibChange::Insert(p.parse().unwrap(), Target::Tunnel(TunnelId(t)))
    }

    fn routes(f: &Fib) -> Vec<(ipnet::IpNet, Target)> {
        f.routes().collect()
    }

    /// Each publication carries every change so far; the spare is reused
    /// only once the "worker" gave it back, and changes made meanwhile go
    /// out together.
    #[test]
    fn publications_alternate_two_tables() {
        let mut s = FibSync::default();
        assert!(s.publish(|_| Ok::<_, ()>(())).is_none(), "nothing pending");
        s.push(vec![insert("10.0.0.0/8", 1)]);
        let mut worker = s.publish(Ok::<_, ()>).unwrap().unwrap();
        assert_eq!(routes(&worker).len(), 1);
        // The worker holds the new table; the old one it had (the spare)
        // is free: the next change publishes at once.
        s.push(vec![insert("10.1.0.0/16", 2)]);
        let held = s.publish(Ok::<_, ()>).unwrap().unwrap();
        assert_eq!(routes(&held), routes(s.live()));
        assert_eq!(routes(&held).len(), 2);
        // The worker has not returned the first table yet: nothing goes.
        s.push(vec![FibChange::Remove("10.0.0.0/8".parse().unwrap())]);
        assert!(s.publish(Ok::<_, ()>).is_none());
        s.push(vec![insert("10.2.0.0/16", 3)]);
        // Given back: both changes go out in one table, on top of the
        // one it missed.
        drop(std::mem::replace(&mut worker, held));
        let third = s.publish(Ok::<_, ()>).unwrap().unwrap();
        let mut want = vec![
            ("10.1.0.0/16".parse().unwrap(), Target::Tunnel(TunnelId(2))),
            ("10.2.0.0/16".parse().unwrap(), Target::Tunnel(TunnelId(3))),
        ];
        want.sort_by_key(|(p, _)| *p);
        assert_eq!(routes(&third), want);
        assert_eq!(s.published(), 3);
        // A failed send keeps the changes.
        drop(worker);
        s.push(vec![insert("10.3.0.0/16", 4)]);
        assert_eq!(s.publish(|_| Err::<(), _>("full")), Some(Err("full")));
        assert!(s.has_pending());
        let fourth = s.publish(Ok::<_, ()>).unwrap().unwrap();
        assert_eq!(routes(&fourth).len(), 3);
        assert_eq!(s.refused(), 0);
    }
}
