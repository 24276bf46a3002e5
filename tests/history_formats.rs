//! History files: bad input gets an error naming the file and line, never a panic; our own
//! JSON-lines format round-trips; EDN histories import with Jepsen's meaning of `:fail` and
//! `:info`; the HTML visualization marks the operation that could not be placed.

use std::path::PathBuf;

use odgm_sim::check::formats::{
    load_jepsen_edn, load_jsonl, load_kv_edn, load_porcupine_etcd, load_porcupine_kv, write_edn,
    write_jsonl, RegisterEdn,
};
use odgm_sim::check::history::{FaultEvent, History, Operation, Outcome};
use odgm_sim::check::model::{KeyedModel, KvModel};
use odgm_sim::check::{check, html, CheckOptions, RegInput, RegOutput, RegisterModel, Verdict};

fn file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    (dir, p)
}

fn etcd_err(text: &str) -> String {
    let (_d, p) = file("h.log", text);
    let e = load_porcupine_etcd(&p)
        .expect_err("must be rejected")
        .to_string();
    assert!(e.contains("h.log:"), "error must name the file: {e}");
    e
}

const L: &str = "INFO  jepsen.util - ";

#[test]
fn porcupine_etcd_bad_input() {
    let e = etcd_err(&format!(
        "{L}0\t:invoke\t:read\tnil\nthis is not a log line\n"
    ));
    assert!(e.contains(":2:"), "{e}");
    let e = etcd_err(&format!("{L}0\t:invoke\t:frobnicate\t1\n"));
    assert!(e.contains(":1:") && e.contains("unknown operation"), "{e}");
    let e = etcd_err(&format!("{L}0\t:ok\t:read\t1\n"));
    assert!(
        e.contains(":1:") && e.contains("no operation pending"),
        "{e}"
    );
    let e = etcd_err(&format!(
        "{L}0\t:invoke\t:read\tnil\n{L}0\t:invoke\t:write\t3\n"
    ));
    assert!(e.contains(":2:") && e.contains("pending"), "{e}");
    let e = etcd_err(&format!("{L}0\t:invoke\t:write\tseven\n"));
    assert!(e.contains(":1:") && e.contains("integer"), "{e}");
    let e = etcd_err(&format!("{L}0\t:invoke\t:cas\t[1 2 3]\n"));
    assert!(e.contains("[from to]"), "{e}");
    let e = etcd_err(&format!("{L}0\t:bogus\t:read\tnil\n"));
    assert!(e.contains("unknown event type"), "{e}");
}

#[test]
fn porcupine_kv_bad_input() {
    let (_d, p) = file("c01-x.txt", "{:process 0, :type :invoke, :f :get, :key \"1\", :value nil}\n{:process 0, :type :ok, :f :get\n");
    let e = load_porcupine_kv(&p).unwrap_err().to_string();
    assert!(e.contains("c01-x.txt:2:") && e.contains("EDN"), "{e}");
    let (_d, p) = file(
        "c01-y.txt",
        "{:process 0, :type :invoke, :f :get, :value nil}\n",
    );
    let e = load_porcupine_kv(&p).unwrap_err().to_string();
    assert!(e.contains(":1:") && e.contains(":key"), "{e}");
}

#[test]
fn jepsen_edn_import() {
    // Nemesis events become faults; :fail drops (cas-register) or is evidence (etcd); a
    // process with an :info is pending to the end.
    let text = r#"[{:process 0, :type :invoke, :f :write, :value 1}
 {:process 0, :type :ok, :f :write, :value 1}
 {:process :nemesis, :type :info, :f :start, :value "partition"}
 {:process 1, :type :invoke, :f :cas, :value [2 3]}
 {:process 1, :type :fail, :f :cas, :value [2 3]}
 {:process 2, :type :invoke, :f :write, :value 5}
 {:process 2, :type :info, :f :write, :value 5}
 {:process :nemesis, :type :info, :f :stop, :value nil}
 {:process 3, :type :invoke, :f :read, :value nil}
 {:process 3, :type :ok, :f :read, :value 5}]"#;
    let (_d, p) = file("h.edn", text);
    let RegisterEdn::Plain(h) = load_jepsen_edn(&p).unwrap() else {
        panic!("a plain register history");
    };
    assert_eq!(h.ops.len(), 4);
    assert_eq!(h.faults.len(), 1);
    assert_eq!(h.faults[0].end, Some(8));
    assert_eq!(h.ops[2].outcome, Outcome::Info);
    for m in [RegisterModel::ETCD, RegisterModel::KNOSSOS_CAS] {
        assert_eq!(
            check(&m, &h, &CheckOptions::default()).unwrap().verdict,
            Verdict::Ok
        );
    }
    // One map per line works too, and errors name the line.
    let (_d, p) = file("l.edn", "{:process 0, :type :invoke, :f :read, :value nil}\n{:process 0, :type :ok, :f :read, :value [1]}\n");
    let e = load_jepsen_edn(&p).err().expect("refused").to_string();
    assert!(e.contains("l.edn:2:") && e.contains("integer"), "{e}");
    let (_d, p) = file(
        "m.edn",
        "{:process 0, :type :invoke, :f :read}\n{:process 0 :type}\n",
    );
    let e = load_jepsen_edn(&p).err().expect("refused").to_string();
    assert!(e.contains("m.edn:2:"), "{e}");
}

fn sample() -> History<RegInput, RegOutput> {
    History {
        ops: vec![
            Operation {
                client: 0,
                invoke: 0,
                complete: Some(10),
                input: RegInput::Write { value: 1 },
                output: Some(RegOutput::Write),
                outcome: Outcome::Ok,
            },
            Operation {
                client: 1,
                invoke: 20,
                complete: Some(30),
                input: RegInput::Read,
                output: Some(RegOutput::Read { value: Some(2) }),
                outcome: Outcome::Ok,
            },
            Operation {
                client: 2,
                invoke: 5,
                complete: None,
                input: RegInput::Cas { from: 1, to: 3 },
                output: None,
                outcome: Outcome::Info,
            },
        ],
        faults: vec![FaultEvent {
            time: 12,
            end: Some(25),
            kind: "partition".into(),
            detail: "{1} | {2,3}".into(),
            node: None,
        }],
    }
}

#[test]
fn jsonl_round_trip_and_errors() {
    let h = sample();
    let mut buf = Vec::new();
    write_jsonl(&h, &mut buf).unwrap();
    let (_d, p) = file("h.jsonl", std::str::from_utf8(&buf).unwrap());
    let back: History<RegInput, RegOutput> = load_jsonl(&p).unwrap();
    assert_eq!(back, h);
    let (_d, p) = file("bad.jsonl", "{\"client\":0}\n");
    let e = load_jsonl::<RegInput, RegOutput>(&p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.jsonl:1:"), "{e}");
    // A second invocation while one is pending is a malformed history, not a verdict.
    let mut two = sample();
    two.ops[1].client = 0;
    two.ops[1].invoke = 5;
    let mut buf = Vec::new();
    write_jsonl(&two, &mut buf).unwrap();
    let (_d, p) = file("two.jsonl", std::str::from_utf8(&buf).unwrap());
    let e = load_jsonl::<RegInput, RegOutput>(&p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("pending"), "{e}");
}

#[test]
fn html_marks_the_unplaceable_operation() {
    let h = sample();
    let r = check(&RegisterModel::ETCD, &h, &CheckOptions::default()).unwrap();
    assert_eq!(r.verdict, Verdict::Illegal);
    let page = html::render("sample", &RegisterModel::ETCD, &h, Some(&r));
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains(r#"<b id="verdict">illegal</b>"#));
    // One operation cannot be placed, and the page opens on it.
    assert_eq!(page.matches(r#""state":"failed""#).count(), 1);
    assert!(page.contains(r#""focus":{"key""#), "no focus");
    assert!(page.contains("cannot be placed: <b>"));
    assert!(page.contains(r#""faults":[{"i":0"#));
    assert!(
        !page.contains("src=") && !page.contains("http"),
        "the page must work offline: nothing fetched"
    );
}

/// Knossos's corpus in the shapes that tripped a reader: a leading `;` comment, a list
/// instead of a vector, comments between maps and at line ends, commas. With `--init 0` a
/// history that reads 0 before any write is legal; without, it is not.
#[test]
fn knossos_shapes_import_and_init_sets_the_first_value() {
    let text = r#"; A Knossos history: the register starts at 0.
; Comments come first, between maps, and after them.
({:process 0, :type :invoke, :f :read, :value nil} ; the first read
 {:process 0, :type :ok, :f :read, :value 0}
 ;; a write
 {:process 1, :type :invoke, :f :write, :value 3},
 {:process 1, :type :ok, :f :write, :value 3}
 {:process 0, :type :invoke, :f :cas, :value [3 4]}
 {:process 0, :type :ok, :f :cas, :value [3 4]})
"#;
    let (_d, p) = file("knossos.edn", text);
    let RegisterEdn::Plain(h) = load_jepsen_edn(&p).expect("imports") else {
        panic!("plain");
    };
    assert_eq!(h.ops.len(), 3);
    let m = RegisterModel::KNOSSOS_CAS;
    let verdict = |m: RegisterModel| check(&m, &h, &CheckOptions::default()).unwrap().verdict;
    assert_eq!(verdict(m), Verdict::Illegal, "0 was never written");
    assert_eq!(verdict(m.starting_at(Some(0))), Verdict::Ok);
    // A comment with a bracket or a quote in it changes nothing.
    let (_d, p) = file(
        "c.edn",
        "{:process 0, :type :invoke, :f :read, :value nil} ; [ \" {\n{:process 0, :type :ok, :f :read, :value nil}\n",
    );
    assert!(matches!(load_jepsen_edn(&p), Ok(RegisterEdn::Plain(_))));
}

/// Jepsen's `independent` histories (`:value [key value]`) map to a register per key, with
/// `:time` for real-time order: here the two reads of key 1 overlap in time but not in
/// line order, so only `:time` makes the history legal.
#[test]
fn independent_keys_import_as_one_register_each() {
    let text = r#"[{:process 0, :type :invoke, :f :write, :value [1 5], :time 10}
 {:process 0, :type :ok, :f :write, :value [1 5], :time 20}
 {:process 1, :type :invoke, :f :read, :value [2 nil], :time 25}
 {:process 1, :type :ok, :f :read, :value [2 nil], :time 30}
 {:process 2, :type :invoke, :f :write, :value [1 6], :time 40}
 {:process 3, :type :invoke, :f :read, :value [1 nil], :time 41}
 {:process 3, :type :ok, :f :read, :value [1 6], :time 50}
 {:process 4, :type :invoke, :f :read, :value [1 nil], :time 45}
 {:process 4, :type :ok, :f :read, :value [1 5], :time 48}
 {:process 2, :type :ok, :f :write, :value [1 6], :time 60}
 {:process 5, :type :invoke, :f :cas, :value [2 [0 1]], :time 70}
 {:process 5, :type :fail, :f :cas, :value [2 [0 1]], :time 80}]"#;
    let (_d, p) = file("independent.edn", text);
    let RegisterEdn::Independent(h) = load_jepsen_edn(&p).expect("imports") else {
        panic!("independent");
    };
    assert_eq!(h.ops.len(), 6);
    assert_eq!(h.ops[0].input.key, "1");
    let r = check(
        &KeyedModel(RegisterModel::ETCD),
        &h,
        &CheckOptions::default(),
    )
    .unwrap();
    assert_eq!(r.verdict, Verdict::Ok);
    assert_eq!(r.parts.len(), 2, "one part per key");
    // Key 1 read 6, then 5: illegal once the reads do not overlap.
    let swapped = text
        .replace(":time 45}", ":time 51}")
        .replace(":time 48}", ":time 55}");
    let (_d, p) = file("swapped.edn", &swapped);
    let RegisterEdn::Independent(h) = load_jepsen_edn(&p).unwrap() else {
        panic!("independent");
    };
    let r = check(
        &KeyedModel(RegisterModel::ETCD),
        &h,
        &CheckOptions::default(),
    )
    .unwrap();
    assert_eq!(r.verdict, Verdict::Illegal);
    assert_eq!(
        r.decisive_part().and_then(|p| p.key.clone()),
        Some("1".into())
    );
}

/// A history written as EDN reads back to the same operations' verdict: registers (an etcd
/// log), keyed registers, and our key-value histories with scans and counts.
#[test]
fn exported_histories_reimport_to_the_same_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let corpus =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/porcupine/jepsen");
    for name in ["etcd_000.log", "etcd_002.log"] {
        let h = load_porcupine_etcd(&corpus.join(name)).unwrap();
        let out = dir.path().join(format!("{name}.edn"));
        write_edn(&h, std::fs::File::create(&out).unwrap()).unwrap();
        let RegisterEdn::Plain(back) = load_jepsen_edn(&out).unwrap() else {
            panic!("plain");
        };
        let v = |h: &History<RegInput, RegOutput>| {
            check(&RegisterModel::ETCD, h, &CheckOptions::default())
                .unwrap()
                .verdict
        };
        assert_eq!(v(&back), v(&h), "{name}");
        assert_eq!(back.ops.len(), h.ops.len(), "{name}");
    }
    let kv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/histories");
    for name in ["chaos-504403.jsonl", "scans-and-counts.jsonl"] {
        let h = load_jsonl(&kv.join(name)).unwrap();
        let out = dir.path().join(format!("{name}.edn"));
        write_edn(&h, std::fs::File::create(&out).unwrap()).unwrap();
        let back = load_kv_edn(&out).unwrap();
        let v = |h| {
            check(&KvModel::default(), h, &CheckOptions::default())
                .unwrap()
                .verdict
        };
        assert_eq!(back.ops.len(), h.ops.len(), "{name}");
        assert_eq!(v(&back), v(&h), "{name}");
    }
}
