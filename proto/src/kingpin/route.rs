//! Which links a target names, and one-way messages along them.

use super::link::Queued;
use super::{Kingpin, LinkId, Phase};
use crate::error::SendError;
use crate::fd::FdHandle;
use crate::hot::HandDeliver;
use crate::wire::{Deliver, Kind, Source, Target};
use alloc::vec::Vec;

impl Kingpin {
    /// Routes a one-way message from the kingpin (`from` = None) or a worker.
    pub(super) fn route_send(
        &mut self,
        from: Option<LinkId>,
        to: Target,
        ns: &str,
        name: &str,
        payload: &[u8],
        fds: Vec<FdHandle>,
    ) -> Result<(), SendError> {
        let deliver = Deliver { from: self.source_of(from), ns, name };
        let meta = HandDeliver(&deliver);
        if let Target::Any(_) | Target::Pid(_) = to {
            // One recipient: no list to build.
            let link = match self.resolve_one(&to, None) {
                Ok(link) => link,
                Err(e) => {
                    self.release(fds);
                    return Err(e);
                }
            };
            let reroute = matches!(to, Target::Any(_)).then_some(to);
            return self.push_with(link, Kind::Deliver, &meta, payload, fds, Queued { reroute, call: None });
        }
        let recipients = match self.resolve_many(from, &to) {
            Ok(r) => r,
            Err(e) => {
                self.release(fds);
                return Err(e);
            }
        };
        if recipients.len() > 1 && !fds.is_empty() {
            self.release(fds);
            return Err(SendError::FdsToMany);
        }
        let mut fds = Some(fds);
        let mut result = Ok(());
        for link in recipients {
            let fds = fds.take().unwrap_or_default();
            let queued = Queued { reroute: None, call: None };
            if let Err(e) = self.push_with(link, Kind::Deliver, &meta, payload, fds, queued) {
                result = Err(e);
            }
        }
        result
    }

    pub(super) fn source_of(&self, link: Option<LinkId>) -> Source {
        match link.and_then(|l| self.link(l)) {
            Some(l) => Source::Worker { id: l.info.id, pid: l.info.pid },
            None => Source::Kingpin,
        }
    }

    /// The links an `All` or `Role` target names (`route_send` handles the
    /// one-link targets itself). Errors if it names none.
    fn resolve_many(&mut self, from: Option<LinkId>, to: &Target) -> Result<Vec<LinkId>, SendError> {
        let mut out = Vec::new();
        match to {
            Target::All { include_sender } => {
                for (key, l) in self.links.iter() {
                    let id = super::make_id(key, l.generation);
                    if l.is_live() && (*include_sender || Some(id) != from) {
                        out.push(id);
                    }
                }
            }
            Target::Role(name) => {
                let role = self.role_index(name).ok_or(SendError::NoRoute)?;
                for s in &self.roles[role].slots {
                    if let Some(id) = s.link.filter(|id| self.link(*id).is_some_and(|l| l.is_live())) {
                        out.push(id);
                    }
                }
            }
            Target::Kingpin | Target::Any(_) | Target::Pid(_) => return Err(SendError::NoRoute),
        }
        if out.is_empty() { Err(SendError::NoRoute) } else { Ok(out) }
    }

    /// The one link an `Any` or `Pid` target names, never `exclude`.
    ///
    /// `Any` picks, among the role's workers whose handshake is done, the one
    /// with the fewest requests in flight, round-robin among equals; if none
    /// is up it picks a starting one (the frame then waits for its
    /// handshake).
    pub(super) fn resolve_one(&mut self, to: &Target, exclude: Option<LinkId>) -> Result<LinkId, SendError> {
        match to {
            Target::Pid(pid) => self
                .pids
                .get(pid)
                .copied()
                .filter(|id| Some(*id) != exclude && self.link(*id).is_some_and(|l| l.is_live()))
                .ok_or(SendError::NoRoute),
            Target::Any(name) => {
                let role = self.role_index(name).ok_or(SendError::NoRoute)?;
                let (max_bytes, max_fds) = (self.config.max_queued_bytes, self.config.max_queued_fds);
                let n = self.roles[role].slots.len();
                let start = self.roles[role].next_any;
                let mut best: Option<(u8, u32, usize, LinkId)> = None;
                for i in 0..n {
                    let slot = (start + i) % n;
                    let Some(id) = self.roles[role].slots[slot].link else { continue };
                    let Some(l) = self.link(id) else { continue };
                    if Some(id) == exclude || !l.is_live() || l.draining || l.stopping {
                        continue;
                    }
                    // Ready workers first, then starting ones (the frame waits
                    // for the handshake), then busy ones, then those whose
                    // queue is full (new work for them would be refused);
                    // within each, fewest in flight; then rotation order.
                    // Draining workers get nothing new.
                    let rank = if l.out.len() >= max_bytes || l.out.fds() >= max_fds {
                        3
                    } else if l.takes_work() {
                        0
                    } else if l.phase != Phase::Up {
                        1
                    } else {
                        2
                    };
                    let key = (rank, l.inflight, i, id);
                    if best.is_none_or(|b| (key.0, key.1, key.2) < (b.0, b.1, b.2)) {
                        best = Some(key);
                    }
                }
                let (_, _, i, id) = best.ok_or(SendError::NoRoute)?;
                self.roles[role].next_any = (start + i + 1) % n.max(1);
                Ok(id)
            }
            _ => Err(SendError::NoRoute),
        }
    }
}
