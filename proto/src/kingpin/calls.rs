//! Requests in flight through the kingpin, and everything that ends them:
//! replies, deadlines, cancellation, and links that die.
//!
//! A worker's request to another worker is forwarded under a fresh id; the
//! kingpin remembers where it came from so that the reply, and any callback
//! invocations, find their way back. The kingpin's own requests are tracked
//! the same way, with the requester bookkeeping in [`crate::requester`].

use super::link::{Early, Queued};
use super::{Event, Kingpin, LinkId};
use crate::fd::FdHandle;
use crate::hot::HandCall;
use crate::requester::RequestError;
use crate::time::Instant;
use crate::wire::{self, Call, Cancel, Failure, Invoke, Kind, Release, Reply, Request, Target};
use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use bytes::Bytes;
use core::time::Duration;

/// A request in flight to a worker, by the kingpin's call id. It stays
/// recorded after its reply while any of its callbacks may still be invoked,
/// so that the handler's death releases them at once.
pub(super) enum CallEntry {
    /// The kingpin's own request (its live callbacks are in the kingpin's
    /// [`crate::requester::Requester`]).
    Own { target: LinkId, replied: bool },
    /// A job from the work queue.
    Job { target: LinkId },
    /// A worker's request, forwarded.
    Forward {
        origin: LinkId,
        origin_id: u64,
        target: LinkId,
        replied: bool,
        /// The requester's callback ids not yet invoked: only these are let
        /// through, once each.
        callbacks: BTreeSet<u64>,
    },
}

/// A call about to be sent, its strings and callbacks borrowed.
pub(super) type NewCall<'a> = Call<&'a str, &'a [u64]>;

impl Kingpin {
    /// Sends a call to the one worker `to` names. On error the fds are
    /// released.
    pub(super) fn dispatch_call(
        &mut self,
        from: Option<LinkId>,
        to: &Target,
        call: &NewCall<'_>,
        payload: &[u8],
        fds: Vec<FdHandle>,
    ) -> Result<LinkId, Failure> {
        let _ = from;
        let target = match self.resolve_one(to, None) {
            Ok(t) => t,
            Err(_) => {
                self.release(fds);
                return Err(Failure::NoRoute);
            }
        };
        if call.ns == wire::RPC_NAMESPACE && !self.exports(target, call.name) {
            self.release(fds);
            return Err(Failure::NotExported);
        }
        let reroute = matches!(to, Target::Any(_)).then(|| to.clone());
        let queued = Queued { reroute, call: Some(call.id) };
        match self.push_with(target, Kind::Call, &HandCall(call), payload, fds, queued) {
            Ok(()) => {
                if let Some(l) = self.link_mut(target) {
                    l.inflight += 1;
                }
                Ok(target)
            }
            Err(crate::SendError::Backpressure) => Err(Failure::Backpressure),
            Err(_) => Err(Failure::NoRoute),
        }
    }

    /// Whether the role of `link` exports `name`. While none of the role's
    /// workers has said hello, exports are unknown and the call goes ahead;
    /// a worker that does not export the name then answers `Unhandled`.
    fn exports(&self, link: LinkId, name: &str) -> bool {
        let Some(role) = self.link(link).map(|l| l.role) else { return false };
        let mut known = self.roles[role]
            .slots
            .iter()
            .filter_map(|s| s.link.and_then(|id| self.link(id)))
            .filter(|l| l.phase == super::Phase::Up)
            .peekable();
        if known.peek().is_none() {
            return true;
        }
        known.any(|l| l.exports.iter().any(|e| e == name))
    }

    /// A worker's request.
    pub(super) fn on_request(
        &mut self,
        link: LinkId,
        req: Request<&str>,
        payload: Bytes,
        fds: Vec<FdHandle>,
        now: Instant,
    ) {
        let Request { id, to, ns, name, timeout_ms, callbacks } = req;
        if to == Target::Kingpin {
            let (ns, name) = (self.names.intern(ns), self.names.intern(name));
            let Some(l) = self.link_mut(link) else { return self.release(fds) };
            l.incoming.insert(id);
            let from = l.info.clone();
            return self.event(Event::Request { from, id, ns, name, payload, fds, callbacks });
        }
        let k = self.requests.alloc_id();
        let source = self.source_of(Some(link));
        let call = NewCall { id: k, from: source, ns, name, timeout_ms, callbacks: &callbacks };
        let dispatched = if self.calls.open_from(link) >= self.config.max_open_requests {
            self.release(fds);
            Err(Failure::Backpressure)
        } else {
            self.dispatch_call(Some(link), &to, &call, &payload, fds)
        };
        match dispatched {
            Ok(target) => {
                let deadline = now + Duration::from_millis(timeout_ms);
                let callbacks = callbacks.into_iter().collect();
                let entry = CallEntry::Forward { origin: link, origin_id: id, target, replied: false, callbacks };
                self.calls.insert(k, deadline, entry);
            }
            Err(failure) => {
                // Answered here: no handler will ever invoke its callbacks,
                // so the requester may free them now.
                self.push(link, Kind::Reply, &Reply { id, result: Err(failure) }, &[], Vec::new()).ok();
                if !callbacks.is_empty() {
                    self.push(link, Kind::Release, &Release { call: id }, &[], Vec::new()).ok();
                }
            }
        }
    }

    /// A worker's reply to call `reply.id`.
    pub(super) fn on_reply(&mut self, link: LinkId, reply: Reply, payload: Bytes, fds: Vec<FdHandle>) {
        let k = reply.id;
        match self.calls.get_mut(k) {
            Some(CallEntry::Own { target, replied }) if *target == link && !*replied => {
                // Kept while its callbacks live, so that its handler's death
                // releases them.
                *replied = true;
                if !self.requests.has_callbacks(k) {
                    self.calls.remove(k);
                }
                self.dec_inflight(link);
                if !self.requests.close(k, true) {
                    return self.release(fds);
                }
                let result = match reply.result {
                    Ok(()) => Ok((payload, fds)),
                    Err(f) => {
                        self.release(fds);
                        Err(RequestError::from(f))
                    }
                };
                self.event(Event::Reply { id: k, result });
            }
            Some(CallEntry::Job { target }) if *target == link => {
                self.calls.remove(k);
                self.dec_inflight(link);
                let result = match reply.result {
                    Ok(()) => Ok((payload, fds)),
                    Err(f) => {
                        self.release(fds);
                        Err(RequestError::from(f))
                    }
                };
                self.job_answered(k, link, result);
            }
            Some(CallEntry::Forward { origin, origin_id, target, replied, callbacks })
                if *target == link && !*replied =>
            {
                *replied = true;
                let (origin, origin_id, done) = (*origin, *origin_id, callbacks.is_empty());
                if done {
                    self.calls.remove(k);
                }
                self.dec_inflight(link);
                let back = Reply { id: origin_id, result: reply.result };
                self.push(origin, Kind::Reply, &back, &payload, fds).ok();
            }
            _ => {
                self.requests.late.replies += 1;
                self.release(fds);
            }
        }
    }

    /// A worker invoked a callback of call `invoke.call`.
    pub(super) fn on_invoke(&mut self, link: LinkId, invoke: Invoke, payload: Bytes, fds: Vec<FdHandle>) {
        let (k, callback) = (invoke.call, invoke.callback);
        match self.calls.get_mut(k) {
            Some(CallEntry::Forward { origin, origin_id, target, replied, callbacks })
                if *target == link && callbacks.contains(&callback) =>
            {
                callbacks.remove(&callback);
                let (origin, origin_id) = (*origin, *origin_id);
                if *replied && callbacks.is_empty() {
                    self.calls.remove(k);
                }
                let fwd = Invoke { call: origin_id, callback };
                self.push(origin, Kind::Invoke, &fwd, &payload, fds).ok();
            }
            Some(CallEntry::Own { target, replied }) if *target == link => {
                let replied = *replied;
                if !self.requests.invoke(k, callback) {
                    return self.release(fds);
                }
                if replied && !self.requests.has_callbacks(k) {
                    self.calls.remove(k);
                }
                self.event(Event::Callback { callback, payload, fds });
            }
            _ => {
                // Invoked twice, not one of the request's callbacks, after
                // their release, or by a worker that is not the handler.
                self.requests.late.invocations += 1;
                self.release(fds);
            }
        }
    }

    /// Deadlines: the kingpin's own requests time out; forwarded calls are
    /// forgotten (their requester times out on its own clock). Either way the
    /// handling worker is told to cancel.
    pub(super) fn expire_calls(&mut self, now: Instant) {
        let expired = self.requests.expire(now);
        for id in expired.requests {
            self.end_own_call(id);
            self.event(Event::Reply { id, result: Err(RequestError::TimedOut) });
        }
        for callback in expired.callbacks {
            self.event(Event::CallbackReleased { callback });
        }
        for (k, entry) in self.calls.expire(now) {
            match entry {
                CallEntry::Forward { target, replied: false, .. } | CallEntry::Own { target, replied: false } => {
                    self.withdraw_call(target, k)
                }
                // Answered, kept for their callbacks, which the requester
                // released at this same deadline.
                _ => {}
            }
        }
    }

    /// Forgets the call behind the kingpin's request `id`, telling its worker
    /// to cancel.
    pub(super) fn end_own_call(&mut self, id: u64) {
        if let Some(CallEntry::Own { target, replied }) = self.calls.remove(id)
            && !replied
        {
            self.withdraw_call(target, id);
        }
    }

    /// Call `k` to `target` ended before it was answered. A Call frame still
    /// waiting for the handler's handshake is taken back (its fds released):
    /// the handler never hears of it. One already on its way is followed by
    /// a Cancel.
    pub(super) fn withdraw_call(&mut self, target: LinkId, k: u64) {
        let Some(l) = self.link_mut(target) else { return };
        match l.early.iter().position(|e| e.call == Some(k)) {
            Some(i) => {
                let early = l.early.remove(i).expect("position is in range");
                l.early_bytes -= early.frame.len();
                l.early_fds -= early.fds.len();
                self.release(early.fds);
            }
            None => {
                self.push(target, Kind::Cancel, &Cancel { id: k }, &[], Vec::new()).ok();
            }
        }
        self.dec_inflight(target);
    }

    /// `link` is closing: every call it was handling ends as peer gone, and
    /// every call it had asked for is cancelled at its handler.
    pub(super) fn fail_calls_through(&mut self, link: LinkId) {
        let ended = self.calls.extract_if(|e| match e {
            CallEntry::Own { target, .. } | CallEntry::Job { target } => *target == link,
            CallEntry::Forward { origin, target, .. } => *target == link || *origin == link,
        });
        for (k, entry) in ended {
            match entry {
                CallEntry::Job { .. } => self.job_lost(k),
                CallEntry::Own { .. } => {
                    if self.requests.close(k, false) {
                        self.event(Event::Reply { id: k, result: Err(RequestError::PeerGone) });
                    }
                    for callback in self.requests.release_callbacks(k) {
                        self.event(Event::CallbackReleased { callback });
                    }
                }
                CallEntry::Forward { origin, origin_id, target, replied, callbacks } if target == link => {
                    if !replied {
                        let reply = Reply { id: origin_id, result: Err(Failure::PeerGone) };
                        self.push(origin, Kind::Reply, &reply, &[], Vec::new()).ok();
                    }
                    if !callbacks.is_empty() {
                        self.push(origin, Kind::Release, &Release { call: origin_id }, &[], Vec::new()).ok();
                    }
                }
                CallEntry::Forward { target, replied, .. } => {
                    if !replied {
                        self.withdraw_call(target, k);
                    }
                }
            }
        }
    }

    /// Frames that were waiting for a worker that is gone: "any one of a
    /// role" frames go to another worker of the role; requests end as peer
    /// gone; the rest are dropped. fds of what is dropped are released. The
    /// Call of a request that has already ended goes nowhere.
    pub(super) fn reroute_early(&mut self, early: impl IntoIterator<Item = Early>) {
        for frame in early {
            let mut frame = frame;
            if frame.call.is_some_and(|k| !self.calls.contains(k)) {
                self.release(frame.fds);
                continue;
            }
            if let Some(to) = frame.reroute.clone()
                && let Ok(next) = self.resolve_one(&to, None)
            {
                let call = frame.call;
                match self.push_early(next, frame) {
                    Ok(()) => {
                        if let Some(k) = call {
                            self.retarget(k, next);
                        }
                        continue;
                    }
                    Err(back) => frame = back,
                }
            }
            if let Some(k) = frame.call {
                self.fail_call(k, Failure::PeerGone);
            }
            self.release(frame.fds);
        }
    }

    /// Call `k` now waits for `next` instead.
    fn retarget(&mut self, k: u64, next: LinkId) {
        match self.calls.get_mut(k) {
            Some(CallEntry::Own { target, .. } | CallEntry::Forward { target, .. } | CallEntry::Job { target }) => {
                *target = next
            }
            None => return,
        }
        if let Some(l) = self.link_mut(next) {
            l.inflight += 1;
        }
    }

    /// Ends call `k` with `failure` at its requester.
    fn fail_call(&mut self, k: u64, failure: Failure) {
        match self.calls.remove(k) {
            Some(CallEntry::Own { .. }) => {
                if self.requests.close(k, false) {
                    self.event(Event::Reply { id: k, result: Err(RequestError::from(failure)) });
                }
                for callback in self.requests.release_callbacks(k) {
                    self.event(Event::CallbackReleased { callback });
                }
            }
            Some(CallEntry::Forward { origin, origin_id, callbacks, .. }) => {
                let reply = Reply { id: origin_id, result: Err(failure) };
                self.push(origin, Kind::Reply, &reply, &[], Vec::new()).ok();
                if !callbacks.is_empty() {
                    self.push(origin, Kind::Release, &Release { call: origin_id }, &[], Vec::new()).ok();
                }
            }
            Some(CallEntry::Job { .. }) => self.job_lost(k),
            None => {}
        }
    }

    /// One call fewer in flight to `link`: it may have room for a job, or
    /// be done draining.
    pub(super) fn dec_inflight(&mut self, link: LinkId) {
        let Some(l) = self.link_mut(link) else { return };
        l.inflight = l.inflight.saturating_sub(1);
        let role = l.role;
        self.finish_drain(link);
        self.dispatch_jobs(role);
    }
}
