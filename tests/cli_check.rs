//! `odgm-sim check` as a user runs it: verdicts against a manifest, exit codes for
//! mismatches, unlisted files and unreadable input, and the HTML output.

use std::path::Path;
use std::process::Command;

fn corpus() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/porcupine")
}

fn odgm(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_odgm-sim"))
        .args(args)
        .output()
        .expect("run odgm-sim");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn manifest_subset_matches_and_mismatch_fails() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["etcd_000.log", "etcd_002.log"] {
        std::fs::copy(corpus().join("jepsen").join(f), dir.path().join(f)).unwrap();
    }
    let manifest = dir.path().join("MANIFEST.tsv");
    std::fs::write(&manifest, "file\tmodel\texpected\nonly.log\tetcd-register\tok\netcd_000.log\tetcd-register\tbad\netcd_002.log\tetcd-register\tok\n").unwrap();
    let m = manifest.to_str().unwrap();
    let f0 = dir.path().join("etcd_000.log");
    let f2 = dir.path().join("etcd_002.log");
    let (code, out) = odgm(&[
        "check",
        "--manifest",
        m,
        f0.to_str().unwrap(),
        f2.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 mismatches"), "{out}");

    // A wrong expectation is a mismatch and a failing exit code.
    std::fs::write(
        &manifest,
        "file\tmodel\texpected\netcd_000.log\tetcd-register\tok\n",
    )
    .unwrap();
    let (code, out) = odgm(&["check", "--manifest", m, f0.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("MISMATCH"), "{out}");

    // A file the manifest does not list fails too.
    let (code, out) = odgm(&["check", "--manifest", m, f2.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("NOT IN MANIFEST"), "{out}");
}

#[test]
fn bad_file_is_an_error_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("broken.log");
    std::fs::write(&f, "INFO  jepsen.util - 0\t:invoke\t:read\tnil\ngarbage\n").unwrap();
    let (code, out) = odgm(&["check", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("broken.log:2:"), "{out}");
}

#[test]
fn html_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("out.html");
    let f = corpus().join("jepsen/etcd_000.log");
    let (code, out) = odgm(&[
        "check",
        f.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "an illegal history fails the command: {out}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("cannot be placed: <b>"));
    assert_eq!(page.matches(r#""state":"failed""#).count(), 1);
}
