//! Scans: every (key, value) a scan returned must be a value some client wrote to that key.
//! Where a run checks linearizability, scans and counts are checked as reads of every key at
//! one instant; this check holds on every run, the conflict-free and eventually consistent
//! ones too, and catches a scan that invents or mixes up values.

use std::collections::{BTreeMap, BTreeSet};

use super::failure::Failure;
use super::history::{History, Outcome};
use super::model::{KvInput, KvOutput};

/// The first scan pair whose value no client wrote to its key.
pub fn check_scans(history: &History<KvInput, KvOutput>) -> Option<Failure> {
    let mut written: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for op in &history.ops {
        match &op.input {
            KvInput::Put { key, value } | KvInput::Append { key, value } => {
                written.entry(key).or_default().insert(value);
            }
            KvInput::Cas { key, to, .. } => {
                written.entry(key).or_default().insert(to);
            }
            _ => {}
        }
    }
    history.ops.iter().find_map(|op| {
        let (Outcome::Ok, Some(KvOutput::Scan { pairs })) = (op.outcome, &op.output) else {
            return None;
        };
        pairs.iter().find_map(|(k, v)| {
            let known = written
                .get(k.as_str())
                .is_some_and(|vs| vs.contains(v.as_str()));
            (!known).then(|| Failure::ScanValue {
                at_ms: op.complete.unwrap_or(op.invoke) / 1_000_000,
                key: k.clone(),
                value: v.clone(),
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::history::Recorder;

    /// Puts `1 = a` and `2 = b`, then a scan that returned `pairs`.
    fn history(pairs: &[(&str, &str)]) -> History<KvInput, KvOutput> {
        let mut r: Recorder<KvInput, KvOutput> = Recorder::default();
        for (client, key, value) in [(1, "1", "a"), (2, "2", "b")] {
            let input = KvInput::Put {
                key: key.into(),
                value: value.into(),
            };
            r.invoke(client, input, 0).unwrap();
            r.complete(client, Outcome::Ok, Some(KvOutput::Ok), 1)
                .unwrap();
        }
        let all = KvInput::Scan {
            start: None,
            end: None,
        };
        r.invoke(3, all, 2_000_000).unwrap();
        let pairs = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        r.complete(3, Outcome::Ok, Some(KvOutput::Scan { pairs }), 5_000_000)
            .unwrap();
        r.finish()
    }

    #[test]
    fn a_value_written_to_another_key_is_caught() {
        assert_eq!(check_scans(&history(&[("1", "a"), ("2", "b")])), None);
        assert_eq!(
            check_scans(&history(&[("1", "b"), ("2", "b")])),
            Some(Failure::ScanValue {
                at_ms: 5,
                key: "1".into(),
                value: "b".into()
            })
        );
    }
}
