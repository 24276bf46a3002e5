//! Independent copies of a model, one per key: Jepsen's `independent` histories, where an
//! operation's `:value` is `[key value]` and each key is its own register.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Model, Step, Touches};

/// An operation of the inner model on one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Keyed<I> {
    /// The key.
    pub key: String,
    /// The operation.
    pub op: I,
}

/// A model with one independent copy of `M` per key (every key starts at `M`'s initial
/// state). Histories split per key, and each key is checked against `M` alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyedModel<M>(pub M);

impl<M: Model> KeyedModel<M> {
    fn state_of(&self, s: &BTreeMap<String, M::State>, key: &str) -> M::State {
        s.get(key).cloned().unwrap_or_else(|| self.0.init())
    }
}

impl<M: Model> Model for KeyedModel<M> {
    type State = BTreeMap<String, M::State>;
    type Input = Keyed<M::Input>;
    type Output = M::Output;

    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn init(&self) -> Self::State {
        BTreeMap::new()
    }

    fn step(
        &self,
        s: &Self::State,
        i: &Keyed<M::Input>,
        o: Option<&M::Output>,
    ) -> Step<Self::State> {
        let now = self.state_of(s, &i.key);
        match self.0.step(&now, &i.op, o) {
            Step::Illegal => Step::Illegal,
            Step::Unchanged => Step::Unchanged,
            Step::To(next) => {
                let mut n = s.clone();
                n.insert(i.key.clone(), next);
                Step::To(n)
            }
        }
    }

    fn on_fail(&self, i: &Keyed<M::Input>, o: Option<&M::Output>) -> Option<M::Output> {
        self.0.on_fail(&i.op, o)
    }

    fn touches(&self, i: &Keyed<M::Input>) -> Touches {
        Touches::Key(i.key.clone())
    }

    fn is_read_only(&self, i: &Keyed<M::Input>) -> bool {
        self.0.is_read_only(&i.op)
    }

    fn never_changes_state(&self, i: &Keyed<M::Input>, o: Option<&M::Output>) -> bool {
        self.0.never_changes_state(&i.op, o)
    }

    fn unobservable<'a>(
        &self,
        i: &Keyed<M::Input>,
        others: &mut dyn Iterator<Item = (&'a Keyed<M::Input>, Option<&'a M::Output>)>,
    ) -> bool {
        let mut same_key = others
            .filter(|(o, _)| o.key == i.key)
            .map(|(o, out)| (&o.op, out));
        self.0.unobservable(&i.op, &mut same_key)
    }

    fn conceal(
        &self,
        ops: &[(&Keyed<M::Input>, Option<&M::Output>)],
    ) -> Vec<Option<Keyed<M::Input>>> {
        let mut out = vec![None; ops.len()];
        let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (n, (i, _)) in ops.iter().enumerate() {
            by_key.entry(&i.key).or_default().push(n);
        }
        for (key, members) in by_key {
            let inner: Vec<(&M::Input, Option<&M::Output>)> =
                members.iter().map(|&n| (&ops[n].0.op, ops[n].1)).collect();
            for (&n, c) in members.iter().zip(self.0.conceal(&inner)) {
                out[n] = c.map(|op| Keyed {
                    key: key.to_string(),
                    op,
                });
            }
        }
        out
    }

    fn names_values(&self, i: &Keyed<M::Input>) -> bool {
        self.0.names_values(&i.op)
    }

    fn blind_write(&self, i: &Keyed<M::Input>) -> bool {
        self.0.blind_write(&i.op)
    }

    fn allows_jit(&self, i: &Keyed<M::Input>, o: Option<&M::Output>) -> bool {
        self.0.allows_jit(&i.op, o)
    }

    fn may_enable(
        &self,
        s: &Self::State,
        w: &Keyed<M::Input>,
        op: &Keyed<M::Input>,
        out: Option<&M::Output>,
    ) -> bool {
        w.key == op.key
            && self
                .0
                .may_enable(&self.state_of(s, &w.key), &w.op, &op.op, out)
    }

    fn lookahead(&self) -> bool {
        self.0.lookahead()
    }

    fn lookahead_passes(&self, i: &Keyed<M::Input>, o: Option<&M::Output>) -> bool {
        self.0.lookahead_passes(&i.op, o)
    }

    fn may_precede<'a>(
        &self,
        s: &Self::State,
        i: &Keyed<M::Input>,
        o: Option<&M::Output>,
        between: &mut dyn Iterator<Item = (&'a Keyed<M::Input>, Option<&'a M::Output>)>,
    ) -> bool {
        let mut same_key = between
            .filter(|(b, _)| b.key == i.key)
            .map(|(b, out)| (&b.op, out));
        self.0
            .may_precede(&self.state_of(s, &i.key), &i.op, o, &mut same_key)
    }

    fn describe(&self, i: &Keyed<M::Input>, o: Option<&M::Output>) -> String {
        format!("{}: {}", i.key, self.0.describe(&i.op, o))
    }
}
