//! Registers: one value, read and written, with compare-and-set in two flavours of failure
//! handling (etcd's and Knossos's).

use serde::{Deserialize, Serialize};

use super::{Model, Step};

/// Input of the register models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "lowercase")]
pub enum RegInput {
    /// Read the value.
    Read,
    /// Write a value.
    Write {
        /// The value.
        value: i64,
    },
    /// Compare-and-set.
    Cas {
        /// Expected value.
        from: i64,
        /// New value.
        to: i64,
    },
}

/// Output of the register models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "lowercase")]
pub enum RegOutput {
    /// A read's value (`None`: never written).
    Read {
        /// The value read.
        value: Option<i64>,
    },
    /// A write was acknowledged.
    Write,
    /// A cas result: whether it swapped.
    Cas {
        /// Swapped or not.
        ok: bool,
    },
}

/// How a register model treats failed compare-and-sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CasFailure {
    /// Plain read/write register: no cas.
    NoCas,
    /// Porcupine's etcd model: a failed cas happened and is evidence that the value differed.
    Evidence,
    /// Knossos's cas-register: failed operations are dropped.
    Dropped,
}

/// A single register, starting absent (never written) or at a given value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterModel {
    /// Failure semantics of cas.
    pub cas: CasFailure,
    /// The value before any write (`None`: absent, reads as nil). Knossos checks its own
    /// histories as `(cas-register 0)`.
    pub init: Option<i64>,
}

impl RegisterModel {
    /// Read/write register.
    pub const REGISTER: RegisterModel = RegisterModel {
        cas: CasFailure::NoCas,
        init: None,
    };
    /// Porcupine's etcd model.
    pub const ETCD: RegisterModel = RegisterModel {
        cas: CasFailure::Evidence,
        init: None,
    };
    /// Knossos's cas-register.
    pub const KNOSSOS_CAS: RegisterModel = RegisterModel {
        cas: CasFailure::Dropped,
        init: None,
    };

    /// The same model starting at `init`.
    pub fn starting_at(self, init: Option<i64>) -> RegisterModel {
        RegisterModel { init, ..self }
    }
}

impl Model for RegisterModel {
    type State = Option<i64>;
    type Input = RegInput;
    type Output = RegOutput;

    fn name(&self) -> &'static str {
        match self.cas {
            CasFailure::NoCas => "register",
            CasFailure::Evidence => "etcd",
            CasFailure::Dropped => "cas-register",
        }
    }

    fn init(&self) -> Option<i64> {
        self.init
    }

    fn blind_write(&self, i: &RegInput) -> bool {
        matches!(i, RegInput::Write { .. })
    }

    /// A write of `w` can make a read legal only if it writes what the read returned, and a
    /// cas only if it writes what the cas expects (a failed cas: anything else).
    fn may_enable(
        &self,
        s: &Option<i64>,
        w: &RegInput,
        op: &RegInput,
        out: Option<&RegOutput>,
    ) -> bool {
        let leaves = match w {
            RegInput::Write { value } => Some(*value),
            RegInput::Cas { from, to } if *s == Some(*from) => Some(*to),
            RegInput::Cas { .. } => return false,
            RegInput::Read => return false,
        };
        match (op, out) {
            (RegInput::Read, Some(RegOutput::Read { value })) => *value == leaves,
            (RegInput::Cas { from, .. }, Some(RegOutput::Cas { ok: false })) => {
                leaves != Some(*from)
            }
            (RegInput::Cas { from, .. }, _) => leaves == Some(*from),
            _ => true,
        }
    }

    fn step(&self, s: &Option<i64>, i: &RegInput, o: Option<&RegOutput>) -> Step<Option<i64>> {
        let legal = |ok: bool| if ok { Step::Unchanged } else { Step::Illegal };
        match (i, o) {
            (RegInput::Read, None) => Step::Unchanged,
            (RegInput::Read, Some(RegOutput::Read { value })) => legal(value == s),
            (RegInput::Write { value }, None | Some(RegOutput::Write)) => Step::To(Some(*value)),
            (RegInput::Cas { .. }, _) if self.cas == CasFailure::NoCas => Step::Illegal,
            (RegInput::Cas { from, to }, None) => {
                if *s == Some(*from) {
                    Step::To(Some(*to))
                } else {
                    Step::Unchanged
                }
            }
            (RegInput::Cas { from, to }, Some(RegOutput::Cas { ok: true })) => {
                if *s == Some(*from) {
                    Step::To(Some(*to))
                } else {
                    Step::Illegal
                }
            }
            (RegInput::Cas { from, .. }, Some(RegOutput::Cas { ok: false })) => {
                legal(*s != Some(*from))
            }
            _ => Step::Illegal,
        }
    }

    fn on_fail(&self, i: &RegInput, _o: Option<&RegOutput>) -> Option<RegOutput> {
        match (self.cas, i) {
            (CasFailure::Evidence, RegInput::Cas { .. }) => Some(RegOutput::Cas { ok: false }),
            _ => None,
        }
    }

    fn is_read_only(&self, i: &RegInput) -> bool {
        matches!(i, RegInput::Read)
    }

    fn never_changes_state(&self, i: &RegInput, o: Option<&RegOutput>) -> bool {
        matches!(
            (i, o),
            (RegInput::Read, Some(_)) | (RegInput::Cas { .. }, Some(RegOutput::Cas { ok: false }))
        )
    }

    fn lookahead(&self) -> bool {
        true
    }

    /// A read's value is whatever the last write before it left, so reads after any
    /// operation still decide.
    fn lookahead_passes(&self, _input: &RegInput, _output: Option<&RegOutput>) -> bool {
        true
    }

    /// A read of `v` can follow `state` only if `state` is `v` or something still to be
    /// linearized before it may write `v` (a write of `v`, or a cas to `v` that succeeded
    /// or whose result is unknown). Nothing makes the register absent again (it starts
    /// absent, or at its initial value).
    fn may_precede<'a>(
        &self,
        state: &Option<i64>,
        input: &RegInput,
        output: Option<&RegOutput>,
        between: &mut dyn Iterator<Item = (&'a RegInput, Option<&'a RegOutput>)>,
    ) -> bool {
        let (RegInput::Read, Some(RegOutput::Read { value })) = (input, output) else {
            return true;
        };
        let Some(v) = *value else {
            return state.is_none();
        };
        if *state == Some(v) {
            return true;
        }
        let mut between = between;
        Iterator::any(&mut between, |(i, o): (&RegInput, Option<&RegOutput>)| {
            matches!(
                (i, o),
                (RegInput::Write { value }, _) if *value == v
            ) || matches!(
                (i, o),
                (RegInput::Cas { to, .. }, None | Some(RegOutput::Cas { ok: true })) if *to == v
            )
        })
    }

    fn describe(&self, i: &RegInput, o: Option<&RegOutput>) -> String {
        let show = |v: &Option<i64>| v.map_or("nil".to_string(), |v| v.to_string());
        match (i, o) {
            (RegInput::Read, Some(RegOutput::Read { value })) => format!("read -> {}", show(value)),
            (RegInput::Read, _) => "read -> ?".into(),
            (RegInput::Write { value }, Some(_)) => format!("write {value}"),
            (RegInput::Write { value }, None) => format!("write {value} ?"),
            (RegInput::Cas { from, to }, Some(RegOutput::Cas { ok })) => {
                format!("cas {from}->{to} {}", if *ok { "ok" } else { "fail" })
            }
            (RegInput::Cas { from, to }, _) => format!("cas {from}->{to} ?"),
        }
    }
}
