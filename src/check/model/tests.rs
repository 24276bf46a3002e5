use super::*;

#[test]
fn lookahead_reads_must_extend_the_state() {
    let m = KvModel::default();
    let mut s = KvState::default();
    let get = KvInput::Get { key: "k".into() };
    let append = KvInput::Append {
        key: "k".into(),
        value: "x".into(),
    };
    let put = KvInput::Put {
        key: "k".into(),
        value: "x".into(),
    };
    let other_put = KvInput::Put {
        key: "j".into(),
        value: "x".into(),
    };
    let ok = |s: &KvState, i: &KvInput, v: Option<&str>, between: &[&KvInput]| {
        let out = KvOutput::Get {
            value: v.map(str::to_string),
        };
        let mut between = between.iter().map(|b| (*b, Some(&KvOutput::Ok)));
        m.may_precede(s, i, Some(&out), &mut between)
    };
    // With appends to come, the state must be a prefix of what the read returns.
    assert!(ok(&s, &get, Some("ab"), &[&append]));
    assert!(ok(&s, &get, None, &[&append]));
    s.append("k", "a");
    s.append("k", "bc");
    assert!(ok(&s, &get, Some("abc"), &[&append]));
    assert!(ok(&s, &get, Some("abcd"), &[&append]));
    assert!(!ok(&s, &get, Some("ab"), &[&append]));
    assert!(!ok(&s, &get, Some("abd"), &[&append]));
    assert!(!ok(&s, &get, None, &[&append]));
    // With nothing to come that writes the key, the state must be what the read returns;
    // a write to another key changes nothing.
    assert!(ok(&s, &get, Some("abc"), &[&other_put]));
    assert!(!ok(&s, &get, Some("abcd"), &[&other_put]));
    // A put to come leaves its own value, and only that.
    assert!(ok(&s, &get, Some("x"), &[&put]));
    assert!(!ok(&s, &get, Some("zz"), &[&put]));
    // With appends to come, a put between may leave anything for them to extend.
    assert!(ok(&s, &get, Some("zz"), &[&put, &append]));
    // Another key's read says nothing about this one.
    let other = KvInput::Get { key: "j".into() };
    assert!(ok(&s, &other, None, &[&append]));
}

#[test]
fn lookahead_reads_need_a_writer_of_their_value() {
    let m = RegisterModel::ETCD;
    let read = RegInput::Read;
    let got = |v: Option<i64>| RegOutput::Read { value: v };
    let w2 = RegInput::Write { value: 2 };
    let cas_to_2 = RegInput::Cas { from: 1, to: 2 };
    let failed = RegOutput::Cas { ok: false };
    let ok = |state: Option<i64>, v: Option<i64>, between: &[(&RegInput, Option<&RegOutput>)]| {
        m.may_precede(&state, &read, Some(&got(v)), &mut between.iter().copied())
    };
    assert!(ok(Some(2), Some(2), &[]));
    assert!(!ok(Some(1), Some(2), &[]));
    assert!(ok(Some(1), Some(2), &[(&w2, None)]));
    assert!(ok(Some(1), Some(2), &[(&cas_to_2, None)]));
    assert!(!ok(Some(1), Some(2), &[(&cas_to_2, Some(&failed))]));
    assert!(ok(None, None, &[(&w2, None)]));
    assert!(!ok(Some(1), None, &[(&w2, None)]));
}

#[test]
fn etcd_and_knossos_differ_on_failed_cas() {
    let cas = RegInput::Cas { from: 1, to: 2 };
    assert_eq!(
        RegisterModel::ETCD.on_fail(&cas, None),
        Some(RegOutput::Cas { ok: false })
    );
    assert_eq!(RegisterModel::KNOSSOS_CAS.on_fail(&cas, None), None);
}

#[test]
fn register_steps() {
    let m = RegisterModel::ETCD;
    let step = |s: Option<i64>, i: &RegInput, o: Option<&RegOutput>| m.step(&s, i, o).apply(&s);
    assert_eq!(
        step(
            None,
            &RegInput::Read,
            Some(&RegOutput::Read { value: None })
        ),
        Some(None)
    );
    assert_eq!(
        step(
            None,
            &RegInput::Read,
            Some(&RegOutput::Read { value: Some(1) })
        ),
        None
    );
    let cas = RegInput::Cas { from: 1, to: 2 };
    assert_eq!(
        step(Some(1), &cas, Some(&RegOutput::Cas { ok: true })),
        Some(Some(2))
    );
    assert_eq!(
        step(Some(1), &cas, Some(&RegOutput::Cas { ok: false })),
        None
    );
    assert_eq!(step(Some(3), &cas, None), Some(Some(3)));
    assert_eq!(
        RegisterModel::REGISTER.step(&Some(1), &cas, None),
        Step::Illegal
    );
}

#[test]
fn kv_steps() {
    let m = KvModel {
        absent_reads_empty: true,
        failed_cas_is_evidence: false,
    };
    let s = m.init();
    let get = |k: &str| KvInput::Get { key: k.into() };
    let s = m
        .step(
            &s,
            &KvInput::Append {
                key: "a".into(),
                value: "x".into(),
            },
            Some(&KvOutput::Ok),
        )
        .apply(&s)
        .unwrap();
    let empty = Some(&KvOutput::Get {
        value: Some(String::new()),
    });
    assert_eq!(
        m.step(
            &s,
            &get("a"),
            Some(&KvOutput::Get {
                value: Some("x".into())
            })
        ),
        Step::Unchanged
    );
    assert_eq!(m.step(&s, &get("b"), empty), Step::Unchanged);
    assert_eq!(KvModel::default().step(&s, &get("b"), empty), Step::Illegal);
}

/// States with the same pairs are equal and hash alike, however their keys arrived (chunk
/// boundaries differ), and a copy changed in one key leaves the original as it was.
#[test]
fn kv_states_compare_by_content() {
    use std::hash::BuildHasher;
    let keys: Vec<String> = (0..200).map(|k| format!("{k}")).collect();
    let mut a = KvState::default();
    for k in &keys {
        a.set(k, Rope::leaf(&format!("v{k}")));
    }
    let mut b = KvState::default();
    for k in keys.iter().rev() {
        b.set(k, Rope::leaf("x"));
        b.append(k, "y");
        b.remove(k);
        b.set(k, Rope::leaf(&format!("v{k}")));
    }
    assert_eq!(a, b);
    let hasher = std::collections::hash_map::RandomState::new();
    assert_eq!(hasher.hash_one(&a), hasher.hash_one(&b));
    let before = a.clone();
    let mut c = a.clone();
    c.append("150", "!");
    assert_ne!(c, a);
    assert_eq!(a, before);
    assert_eq!(
        c.get("150").map(|r| r.to_string_value()),
        Some("v150!".into())
    );
    assert_eq!(
        a.get("150").map(|r| r.to_string_value()),
        Some("v150".into())
    );
    c.remove("150");
    assert_eq!(c.len(), 199);
    let range: Vec<&str> = a.range(Some("10"), Some("11")).map(|(k, _)| k).collect();
    let want: Vec<String> = std::iter::once("10".to_string())
        .chain((100..110).map(|k| k.to_string()))
        .collect();
    assert_eq!(range, want, "keys in [10, 11)");
}
