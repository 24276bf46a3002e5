//! Scans: every (key, value) a scan returned must be a value some client wrote to that key.
//! (Scans are not part of the linearizability check; this catches a scan that invents or
//! mixes up values.)

use std::collections::{BTreeMap, BTreeSet};

use super::failure::Failure;
use super::history::{History, Time};
use super::model::{KvInput, KvOutput};

/// One scan's result: when it completed and the (key, value) pairs it returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanResult {
    /// When it completed (ns since the run started).
    pub at: Time,
    /// The pairs.
    pub pairs: Vec<(u64, String)>,
}

/// The first scan pair whose value no client wrote to its key.
pub fn check_scans(history: &History<KvInput, KvOutput>, scans: &[ScanResult]) -> Option<Failure> {
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
    scans.iter().find_map(|scan| {
        scan.pairs.iter().find_map(|(k, v)| {
            let known = written
                .get(k.to_string().as_str())
                .is_some_and(|vs| vs.contains(v.as_str()));
            (!known).then(|| Failure::ScanValue {
                at_ms: scan.at / 1_000_000,
                key: *k,
                value: v.clone(),
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::history::Recorder;
    use crate::check::Outcome;

    #[test]
    fn a_value_written_to_another_key_is_caught() {
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
        let h = r.finish();
        let scan = |pairs: &[(u64, &str)]| ScanResult {
            at: 5_000_000,
            pairs: pairs.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        };
        assert_eq!(check_scans(&h, &[scan(&[(1, "a"), (2, "b")])]), None);
        assert_eq!(
            check_scans(&h, &[scan(&[(1, "b"), (2, "b")])]),
            Some(Failure::ScanValue {
                at_ms: 5,
                key: 1,
                value: "b".into()
            })
        );
    }
}
