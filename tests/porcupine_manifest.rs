//! The checkers against histories nobody here wrote: every file of the Porcupine corpus in
//! `tests/data/porcupine/` (Porcupine's corpus, copied with its license) must get its known verdict, partitioned and (for the smaller
//! kv histories) as one map.

use std::path::{Path, PathBuf};

use odgm_sim::check::formats::{load_porcupine_etcd, load_porcupine_kv};
use odgm_sim::check::{check, CheckOptions, KvModel, RegisterModel, Verdict};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/porcupine")
}

fn manifest() -> Vec<(String, String, bool)> {
    let text = std::fs::read_to_string(corpus().join("MANIFEST.tsv"))
        .expect("the Porcupine corpus is in tests/data/porcupine");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            (c[0].to_string(), c[1].to_string(), c[2] == "ok")
        })
        .collect()
}

fn verdict_of(file: &str, model: &str, partition: bool) -> Verdict {
    let path = corpus().join(file);
    let opts = CheckOptions {
        partition,
        ..CheckOptions::default()
    };
    if model.starts_with("kv") {
        let h = load_porcupine_kv(&path).unwrap_or_else(|e| panic!("{e}"));
        let m = KvModel {
            absent_reads_empty: true,
            failed_cas_is_evidence: false,
        };
        check(&m, &h, &opts).unwrap().verdict
    } else {
        let h = load_porcupine_etcd(&path).unwrap_or_else(|e| panic!("{e}"));
        check(&RegisterModel::ETCD, &h, &opts).unwrap().verdict
    }
}

#[test]
fn every_manifest_verdict_is_right() {
    let rows = manifest();
    assert_eq!(rows.len(), 108, "102 etcd + 6 kv histories");
    let mut wrong = Vec::new();
    for (file, model, ok) in &rows {
        let v = verdict_of(file, model, true);
        let expected = if *ok { Verdict::Ok } else { Verdict::Illegal };
        if v != expected {
            wrong.push(format!("{file}: {v}, expected {expected}"));
        }
    }
    assert!(wrong.is_empty(), "wrong verdicts:\n{}", wrong.join("\n"));
}

/// The etcd histories also get the same verdict under Knossos's cas-register semantics,
/// where failed operations are dropped.
#[test]
fn etcd_histories_under_knossos_semantics() {
    for (file, model, ok) in manifest() {
        if model != "etcd-register" {
            continue;
        }
        let h = load_porcupine_etcd(&corpus().join(&file)).unwrap();
        let v = check(&RegisterModel::KNOSSOS_CAS, &h, &CheckOptions::default())
            .unwrap()
            .verdict;
        assert_eq!(v == Verdict::Ok, ok, "{file}");
    }
}

#[test]
fn ten_client_kv_histories_as_one_map() {
    for (file, ok) in [
        ("kv/c10-ok.txt", true),
        ("kv/c10-bad.txt", false),
        ("kv/c01-ok.txt", true),
        ("kv/c01-bad.txt", false),
    ] {
        let v = verdict_of(file, "kv", false);
        assert_eq!(
            v,
            if ok { Verdict::Ok } else { Verdict::Illegal },
            "{file} unpartitioned"
        );
    }
}
