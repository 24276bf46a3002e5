//! Sequential specifications: tiny `init` / `step` state machines.
//!
//! `step(state, input, output)` returns the next state if the operation with that output is
//! legal in `state`, `None` otherwise. An `output` of `None` means the operation's result is
//! unknown (an `info` operation that took effect): the model applies its effect and accepts.

use std::fmt::Debug;
use std::hash::Hash;

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
    /// Operation input.
    type Input: Clone + Debug + Send + Sync;
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

    /// The key an operation touches, for P-compositionality; `None` if the model cannot be
    /// split.
    fn partition_key(&self, _input: &Self::Input) -> Option<String> {
        None
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
    /// the search then abandons every linearization that continues from `state`.
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

mod kv;
mod register;

pub use kv::{KvInput, KvModel, KvOutput, KvState, Rope};
pub use register::{CasFailure, RegInput, RegOutput, RegisterModel};

#[cfg(test)]
mod tests;
