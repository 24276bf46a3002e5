use super::*;

#[test]
fn lookahead_reads_must_extend_the_state() {
    let m = KvModel::default();
    let mut s = KvState::default();
    let get = KvInput::Get { key: "k".into() };
    let ok = |s: &KvState, i: &KvInput, v: Option<&str>| {
        let out = KvOutput::Get {
            value: v.map(str::to_string),
        };
        m.may_precede(s, i, Some(&out), &mut std::iter::empty())
    };
    assert!(ok(&s, &get, Some("ab")));
    assert!(ok(&s, &get, None));
    s.append("k", "a");
    s.append("k", "bc");
    assert!(ok(&s, &get, Some("abc")));
    assert!(ok(&s, &get, Some("abcd")));
    assert!(!ok(&s, &get, Some("ab")));
    assert!(!ok(&s, &get, Some("abd")));
    assert!(!ok(&s, &get, None));
    // Another key's read says nothing about this one.
    let other = KvInput::Get { key: "j".into() };
    assert!(ok(&s, &other, None));
    let put = KvInput::Put {
        key: "k".into(),
        value: "x".into(),
    };
    assert!(!m.lookahead_passes(&put, Some(&KvOutput::Ok)));
    let append = KvInput::Append {
        key: "k".into(),
        value: "x".into(),
    };
    assert!(m.lookahead_passes(&append, None));
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
