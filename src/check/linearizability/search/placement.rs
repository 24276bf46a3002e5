//! What the search may place before an operation: writes of unknown result linearized just in
//! time, deferred operations, how soon what comes next would confirm a write, and the
//! lookahead that abandons a state some pending read can no longer follow.

use super::{Search, LOOKAHEAD_EVENTS, NIL};
use crate::check::history::Time;
use crate::check::linearizability::overlap;
use crate::check::model::Model;

impl<M: Model> Search<'_, '_, M> {
    /// What may be linearized right before `op`, in the order tried: operations of unknown
    /// result not yet linearized that were invoked before the first pending return (nothing
    /// that must precede them is left), that change the state, one per distinct input
    /// (identical ones are interchangeable):
    /// - when `op` needs it (`illegal` here, or of unknown result and doing nothing here),
    ///   blind writes the model says may enable `op`, or a deferred operation that may go
    ///   before `op`: after the write `op` is legal (or, of unknown result, changes the
    ///   state), or, when illegal, may still wait for more (a scan of several keys, or the
    ///   deferred operation the write enables);
    /// - when `illegal`, or when `op` may change the state in a way that depends on it (not
    ///   a blind write, which would hide them), deferred operations on `op`'s keys (their
    ///   identical earlier twin linearized first), alone: `op` waits.
    ///
    /// Returns (operation, state after it, state after `op` if `op` then follows).
    pub(super) fn candidates(
        &mut self,
        op: usize,
        illegal: bool,
        needs: bool,
    ) -> Vec<(usize, u32, Option<u32>)> {
        if self.eventless.is_empty() {
            return Vec::new();
        }
        let mut node = self.next[self.head];
        while node != NIL && self.is_call[node] {
            node = self.next[node];
        }
        let bound = if node == NIL {
            Time::MAX
        } else {
            self.ops[self.op_of[node]].ret
        };
        let ops = self.ops;
        let x = &ops[op];
        // Deferred operations that may go before `op`: a blind write that enables one of
        // them, which then enables `op`, is wanted too (a chain).
        let waiting: Vec<usize> = self
            .eventless
            .iter()
            .copied()
            .take_while(|&d| ops[d].call <= bound)
            .filter(|&d| {
                ops[d].deferred && !self.is_linearized(d) && overlap(&ops[d].touches, &x.touches)
            })
            .collect();
        let mut jit: Vec<(usize, u32, Option<u32>)> = Vec::new();
        let mut deferred: Vec<(usize, u32, Option<u32>)> = Vec::new();
        let mut tried: Vec<usize> = Vec::new();
        let now_id = self.state;
        for k in 0..self.eventless.len() {
            let w = self.eventless[k];
            let o = &ops[w];
            if o.call > bound {
                break;
            }
            let now = &self.states.all[now_id as usize];
            // Whether `o` may enable `op`, or a deferred operation waiting for `op`'s place.
            let enables = || {
                self.model
                    .may_enable(now, o.input, x.input, x.output.as_ref())
                    || waiting
                        .iter()
                        .any(|&d| d != w && self.model.may_enable(now, o.input, ops[d].input, None))
            };
            let wanted = if o.jit {
                needs && enables()
            } else {
                overlap(&o.touches, &x.touches)
                    && o.twin.is_none_or(|t| self.is_linearized(t))
                    && if illegal {
                        enables()
                    } else {
                        !(x.read_only || self.model.blind_write(x.input))
                    }
            };
            if !wanted || self.is_linearized(w) || tried.iter().any(|&t| ops[t].input == o.input) {
                continue;
            }
            tried.push(w);
            let Some(after_w) = self.transition(self.state, w) else {
                continue;
            };
            if after_w == self.state {
                continue;
            }
            if !o.jit {
                deferred.push((w, after_w, None));
                continue;
            }
            match self.transition(after_w, op) {
                None if illegal => jit.push((w, after_w, None)),
                None => {}
                Some(after_op) if x.unknown() && after_op == after_w => {}
                Some(after_op) => jit.push((w, after_w, Some(after_op))),
            }
        }
        if jit.len() > 1 {
            // Try first the writes that what comes next confirms: where several would do (a
            // count that needs some key to appear), the right choice saves the search from
            // backtracking through the others.
            let now = &self.states.all[now_id as usize];
            jit.sort_by_cached_key(|&(w, _, _)| self.confirmation(now, w));
        }
        jit.extend(deferred);
        jit
    }

    /// How soon what comes next confirms the blind write `w` in state `now`: the position of
    /// the first operation on its keys, if that operation could see what `w` leaves (a read
    /// of its value); a read that sees something else, or a write that hides it, rank last.
    pub(super) fn confirmation(&self, now: &M::State, w: usize) -> usize {
        let ops = self.ops;
        let o = &ops[w];
        let mut node = self.next[self.head];
        for position in 0..2 * LOOKAHEAD_EVENTS {
            if node == NIL {
                break;
            }
            if self.is_call[node] {
                let x = &ops[self.op_of[node]];
                if overlap(&o.touches, &x.touches) && self.model.names_values(x.input) {
                    let sees = self
                        .model
                        .may_enable(now, o.input, x.input, x.output.as_ref());
                    return if sees && x.read_only {
                        position
                    } else {
                        usize::MAX
                    };
                }
            }
            node = self.next[node];
        }
        usize::MAX / 2
    }

    /// Lookahead pruning: a read that `state`, reached from the current state by linearizing
    /// `step` (one or two operations), can no longer precede. Walks the remaining events in
    /// time order, collecting the operations invoked so far (those may still go before a read
    /// that returns later, and so may the blind writes of unknown result invoked by then); at
    /// each read's return it asks [`Model::may_precede`]. The walk stops at an operation that
    /// does not pass ([`Model::lookahead_passes`]) or after [`LOOKAHEAD_EVENTS`] events
    /// (looking at fewer reads prunes less, never wrongly). A read found is certain, so no
    /// linearization is lost.
    ///
    /// A read of one key that `step` does not touch, returning before where the current
    /// state's own walk ended, is not asked again: its key holds what it held, and what may
    /// come between on that key is what it was (only `step` was linearized since), so it
    /// passes as it passed then.
    ///
    /// Returns where this walk ended (the time of the first event it did not reach), or the
    /// read that cannot follow.
    pub(super) fn lookahead_blocker(&mut self, step: &[usize], state: u32) -> Result<Time, usize> {
        if !self.model.lookahead() || state == self.state {
            return Ok(self.walked_to);
        }
        let s = &self.states.all[state as usize];
        let ops = self.ops;
        let walked_to = self.walked_to;
        let op = step.last().copied().unwrap_or(NIL);
        // The keys `step` changed (`None`: a range or everything, so any key).
        let mut changed = [None; 2];
        let mut wide = false;
        for (slot, &c) in changed.iter_mut().zip(step) {
            *slot = ops[c].key;
            wide |= ops[c].key.is_none();
        }
        let unchanged =
            |key: Option<u32>| !wide && key.is_some_and(|k| !changed.contains(&Some(k)));
        let between = &mut self.between;
        between.clear();
        let mut jit = self.eventless.iter().copied().peekable();
        let linearized = &self.linearized;
        let mut node = self.next[self.head];
        for _ in 0..LOOKAHEAD_EVENTS {
            if node == NIL {
                return Ok(Time::MAX);
            }
            let x = self.op_of[node];
            let at = if self.is_call[node] {
                ops[x].call
            } else {
                ops[x].ret
            };
            let mut stop = false;
            while let Some(w) = jit.next_if(|&w| ops[w].call <= at) {
                if linearized[w / 64] & (1u64 << (w % 64)) != 0 {
                    continue;
                }
                if !ops[w].passes {
                    stop = true;
                    break;
                }
                between.push(w, ops[w].key);
            }
            if stop {
                return Ok(at);
            }
            if x != op {
                let o = &ops[x];
                if self.is_call[node] {
                    if !o.passes {
                        return Ok(at);
                    }
                    between.push(x, o.key);
                } else if at >= walked_to || !unchanged(o.key) {
                    // A read of one key is passed only what may touch that key.
                    let mut others = between
                        .touching(o.key)
                        .map(|b| (ops[b].input, ops[b].output.as_ref()));
                    if !self
                        .model
                        .may_precede(s, o.input, o.output.as_ref(), &mut others)
                    {
                        return Err(x);
                    }
                }
            }
            node = self.next[node];
        }
        Ok(if node == NIL {
            Time::MAX
        } else if self.is_call[node] {
            ops[self.op_of[node]].call
        } else {
            ops[self.op_of[node]].ret
        })
    }
}
