//! Sequential specifications: tiny `init` / `step` state machines.
//!
//! `step(state, input, output)` returns the next state if the operation with that output is
//! legal in `state`, `None` otherwise. An `output` of `None` means the operation's result is
//! unknown (an `info` operation that took effect): the model applies its effect and accepts.

use std::fmt::Debug;
use std::hash::Hash;

/// What part of a model's state an operation touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touches {
    /// One key.
    Key(String),
    /// Every key in `[start, end)` (`None`: unbounded): a scan or a count.
    Range(Option<String>, Option<String>),
    /// All of it: the model cannot be split.
    Everything,
}

/// The result of one step of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<S> {
    /// The operation cannot happen in this state with this output.
    Illegal,
    /// Legal, and the state stays as it was (reads; saves a copy).
    Unchanged,
    /// Legal, and this is the new state.
    To(S),
}

impl<S: Clone> Step<S> {
    /// The state after the step, or `None` if illegal.
    pub fn apply(self, state: &S) -> Option<S> {
        match self {
            Step::Illegal => None,
            Step::Unchanged => Some(state.clone()),
            Step::To(s) => Some(s),
        }
    }
}

/// A sequential specification.
pub trait Model: Send + Sync {
    /// Model state; hashed and compared by the memoising search.
    type State: Clone + Eq + Hash + Debug + Send;
    /// Operation input (compared for equality: identical operations of unknown result are
    /// interchangeable, and the search tries one of them where any would do).
    type Input: Clone + Debug + PartialEq + Send + Sync;
    /// Operation output.
    type Output: Clone + Debug + PartialEq + Send + Sync;

    /// Name for reports.
    fn name(&self) -> &'static str;

    /// The initial state.
    fn init(&self) -> Self::State;

    /// What the operation does in `state`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Step<Self::State>;

    /// What a `fail` outcome means: `None` drops the operation (it did not happen); `Some`
    /// turns it into an operation that happened with that output.
    fn on_fail(
        &self,
        _input: &Self::Input,
        _output: Option<&Self::Output>,
    ) -> Option<Self::Output> {
        None
    }

    /// What part of the state an operation touches. Operations that touch no common key
    /// are independent, so the search splits a history into parts of keys that operations
    /// connect (P-compositionality; Herlihy and Wing's locality makes that exact).
    fn touches(&self, _input: &Self::Input) -> Touches {
        Touches::Everything
    }

    /// Operations whose inputs may be rewritten to one stand-in value without changing any
    /// verdict, as `Some(new input)` per operation of `ops` (a part's operations). The
    /// key-value model rewrites written values that no operation observes (no read returns
    /// them, no cas expects them): they are interchangeable, and once they are one value,
    /// writes of them with unknown results are identical and the search tries one where
    /// any would do.
    fn conceal(&self, ops: &[(&Self::Input, Option<&Self::Output>)]) -> Vec<Option<Self::Input>> {
        vec![None; ops.len()]
    }

    /// Just-in-time linearization (Lowe): whether an operation with an unknown result is a
    /// blind write, whose effect does not depend on the state. The search then linearizes it
    /// only where a later operation needs it (one that is illegal without it, or a write of
    /// unknown result that does nothing without it), never for its own sake.
    fn blind_write(&self, _input: &Self::Input) -> bool {
        false
    }

    /// Whether just-in-time linearization is exact in a part that holds this operation:
    /// `false` for an operation that is legal in states where it has different effects
    /// beyond doing nothing (an append), which a blind write before it would change unseen.
    fn allows_jit(&self, _input: &Self::Input, _output: Option<&Self::Output>) -> bool {
        true
    }

    /// Just-in-time linearization: whether the blind write `write`, linearized in `state`
    /// right before `op`, could be what makes `op` legal or take effect. Only a filter:
    /// `true` costs a model step, never a verdict.
    fn may_enable(
        &self,
        _state: &Self::State,
        _write: &Self::Input,
        _op: &Self::Input,
        _output: Option<&Self::Output>,
    ) -> bool {
        true
    }

    /// Whether the operation's output names what it read, key by key (a count only says
    /// how many keys there are). The search ranks just-in-time writes by the next such
    /// operation that would see them.
    fn names_values(&self, _input: &Self::Input) -> bool {
        true
    }

    /// Whether an operation with an unknown result may be removed altogether because it can
    /// neither change the state nor constrain it (a read).
    fn is_read_only(&self, _input: &Self::Input) -> bool {
        false
    }

    /// Whether an operation with an unknown result (`info`) may be left out because no other
    /// operation can tell whether it took effect. `others` are the operations that did not
    /// complete before it was invoked (input, output; `None`: unknown).
    ///
    /// A model answers `true` only where removing the operation from any linearization
    /// leaves a linearization: then leaving it out changes no verdict (the other way holds
    /// for every info operation: it may never take effect). Many writes that timed out are
    /// what makes a search explode; the default keeps everything.
    fn unobservable<'a>(
        &self,
        _input: &Self::Input,
        _others: &mut dyn Iterator<Item = (&'a Self::Input, Option<&'a Self::Output>)>,
    ) -> bool {
        false
    }

    /// Whether the operation, with this output, leaves every state unchanged wherever it is
    /// legal (a read; a cas known to have failed). The search uses it to prune: such an
    /// operation, legal where it stands, may always be linearized right there.
    fn never_changes_state(&self, input: &Self::Input, output: Option<&Self::Output>) -> bool {
        output.is_some() && self.is_read_only(input)
    }

    /// Whether the model offers lookahead pruning ([`Model::lookahead_passes`] and
    /// [`Model::may_precede`]). The search skips the lookahead when it does not.
    fn lookahead(&self) -> bool {
        false
    }

    /// Lookahead: whether [`Model::may_precede`] still decides for reads that return after
    /// this operation was invoked. `false` ends the walk there (for the key-value model: a
    /// put, delete or cas may reset a value, so later reads say nothing of the state now).
    fn lookahead_passes(&self, _input: &Self::Input, _output: Option<&Self::Output>) -> bool {
        false
    }

    /// Lookahead: whether `state` can still come before the operation when exactly the
    /// operations in `between` (not linearized yet, invoked before it returned) may be
    /// linearized in between, in any order, any of them or none. `false` must be certain:
    /// the search then abandons every linearization that continues from `state`. For an
    /// operation on one key ([`Touches::Key`]), `between` may leave out the operations on
    /// other single keys: they cannot matter to it.
    fn may_precede<'a>(
        &self,
        _state: &Self::State,
        _input: &Self::Input,
        _output: Option<&Self::Output>,
        _between: &mut dyn Iterator<Item = (&'a Self::Input, Option<&'a Self::Output>)>,
    ) -> bool {
        true
    }

    /// Approximate heap and inline bytes of a state, for the checker's memory budget.
    fn state_bytes(&self, _state: &Self::State) -> usize {
        std::mem::size_of::<Self::State>()
    }

    /// One line describing an operation, for reports and the visualization.
    fn describe(&self, input: &Self::Input, output: Option<&Self::Output>) -> String {
        match output {
            Some(o) => format!("{input:?} -> {o:?}"),
            None => format!("{input:?} -> ?"),
        }
    }
}

mod keyed;
mod kv;
mod kv_state;
mod register;

pub use keyed::{Keyed, KeyedModel};
pub use kv::{KvInput, KvModel, KvOutput};
pub use kv_state::{KvState, Rope};
pub use register::{CasFailure, RegInput, RegOutput, RegisterModel};

#[cfg(test)]
mod tests;
