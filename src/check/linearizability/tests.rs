use super::*;
use crate::check::history::Operation;
use crate::check::model::{KvInput, KvModel, KvOutput, RegInput, RegOutput, RegisterModel};

fn op(
    client: u64,
    invoke: Time,
    complete: Option<Time>,
    input: RegInput,
    output: Option<RegOutput>,
) -> Operation<RegInput, RegOutput> {
    Operation {
        client,
        invoke,
        complete,
        input,
        outcome: if complete.is_some() {
            Outcome::Ok
        } else {
            Outcome::Info
        },
        output,
    }
}
fn w(v: i64) -> RegInput {
    RegInput::Write { value: v }
}
fn r(v: Option<i64>) -> Option<RegOutput> {
    Some(RegOutput::Read { value: v })
}
const WOK: Option<RegOutput> = Some(RegOutput::Write);

fn verdict(ops: Vec<Operation<RegInput, RegOutput>>) -> Verdict {
    let h = History {
        ops,
        faults: vec![],
    };
    check(&RegisterModel::ETCD, &h, &CheckOptions::default())
        .unwrap()
        .verdict
}

#[test]
fn textbook_register_histories() {
    // Sequential write then read.
    assert_eq!(
        verdict(vec![
            op(0, 0, Some(1), w(1), WOK),
            op(1, 2, Some(3), RegInput::Read, r(Some(1)))
        ]),
        Verdict::Ok
    );
    // Read of a value never written.
    assert_eq!(
        verdict(vec![
            op(0, 0, Some(1), w(1), WOK),
            op(1, 2, Some(3), RegInput::Read, r(Some(2)))
        ]),
        Verdict::Illegal
    );
    // Stale read after the write completed.
    assert_eq!(
        verdict(vec![
            op(0, 0, Some(1), w(1), WOK),
            op(1, 2, Some(3), RegInput::Read, r(None))
        ]),
        Verdict::Illegal
    );
    // Concurrent read may see either.
    assert_eq!(
        verdict(vec![
            op(0, 0, Some(5), w(1), WOK),
            op(1, 1, Some(2), RegInput::Read, r(None))
        ]),
        Verdict::Ok
    );
    assert_eq!(
        verdict(vec![
            op(0, 0, Some(5), w(1), WOK),
            op(1, 1, Some(2), RegInput::Read, r(Some(1)))
        ]),
        Verdict::Ok
    );
    // New-old inversion: two sequential reads see 1 then the older absent value.
    assert_eq!(
        verdict(vec![
            op(0, 0, Some(10), w(1), WOK),
            op(1, 1, Some(2), RegInput::Read, r(Some(1))),
            op(2, 3, Some(4), RegInput::Read, r(None)),
        ]),
        Verdict::Illegal
    );
    // An indeterminate write may explain a later read...
    assert_eq!(
        verdict(vec![
            op(0, 0, None, w(7), None),
            op(1, 5, Some(6), RegInput::Read, r(Some(7)))
        ]),
        Verdict::Ok
    );
    // ...or never happen.
    assert_eq!(
        verdict(vec![
            op(0, 0, None, w(7), None),
            op(1, 5, Some(6), RegInput::Read, r(None))
        ]),
        Verdict::Ok
    );
    // But it cannot take effect before it was invoked.
    assert_eq!(
        verdict(vec![
            op(1, 0, Some(1), RegInput::Read, r(Some(7))),
            op(0, 2, None, w(7), None)
        ]),
        Verdict::Illegal
    );
}

#[test]
fn witness_names_the_stuck_operation() {
    let h = History {
        ops: vec![
            op(0, 0, Some(1), w(1), WOK),
            op(1, 2, Some(3), RegInput::Read, r(Some(2))),
        ],
        faults: vec![],
    };
    let res = check(&RegisterModel::ETCD, &h, &CheckOptions::default()).unwrap();
    let part = res.decisive_part().unwrap();
    assert_eq!(part.linearization, vec![0]);
    assert_eq!(part.failed_op, Some(1));
}

#[test]
fn budget_gives_unknown_never_ok() {
    let mut ops = Vec::new();
    for c in 0..12u64 {
        ops.push(op(c, c, None, w(c as i64), None));
    }
    // A cas that could write 1000 but never finds 500: the lookahead cannot rule the
    // read out, only the search can.
    ops.push(op(
        50,
        50,
        None,
        RegInput::Cas {
            from: 500,
            to: 1000,
        },
        None,
    ));
    ops.push(op(99, 100, Some(101), RegInput::Read, r(Some(1000))));
    let h = History {
        ops,
        faults: vec![],
    };
    // The plain search (the reductions decide this history at once: it is illegal).
    let opts = CheckOptions {
        max_steps: 50,
        reduce: false,
        ..CheckOptions::default()
    };
    assert_eq!(
        check(&RegisterModel::ETCD, &h, &opts).unwrap().verdict,
        Verdict::Unknown
    );
    let reduced = CheckOptions {
        max_steps: 50,
        ..CheckOptions::default()
    };
    assert_eq!(
        check(&RegisterModel::ETCD, &h, &reduced).unwrap().verdict,
        Verdict::Illegal
    );
}

#[test]
fn kv_partitions_by_key() {
    let kv = |c, i, o, input: KvInput, out: KvOutput| Operation {
        client: c,
        invoke: i,
        complete: Some(o),
        input,
        output: Some(out),
        outcome: Outcome::Ok,
    };
    let h = History {
        ops: vec![
            kv(
                0,
                0,
                1,
                KvInput::Put {
                    key: "a".into(),
                    value: "1".into(),
                },
                KvOutput::Ok,
            ),
            kv(
                1,
                2,
                3,
                KvInput::Get { key: "b".into() },
                KvOutput::Get { value: None },
            ),
            kv(
                1,
                4,
                5,
                KvInput::Get { key: "a".into() },
                KvOutput::Get {
                    value: Some("2".into()),
                },
            ),
        ],
        faults: vec![],
    };
    for partition in [true, false] {
        let opts = CheckOptions {
            partition,
            threads: 1,
            ..CheckOptions::default()
        };
        let res = check(&KvModel::default(), &h, &opts).unwrap();
        assert_eq!(res.verdict, Verdict::Illegal);
        assert_eq!(res.decisive_part().unwrap().failed_op, Some(2));
    }
}
