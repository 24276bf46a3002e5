use super::*;

const GOOD: &str = r#"
duration_ms = 10000
quiet_ms = 3000

[cluster]
mode = "raft"
engine = "redb"
nodes = 3
spares = 1

[workload]
clients = 3
keys = 4

[[schedule]]
at_ms = 1000
fault = "partition"
groups = [[1], [2, 3]]

[[schedule]]
at_ms = 4000
fault = "heal"

[[schedule]]
at_ms = 5000
fault = "kill"
node = "leader"

[[schedule]]
at_ms = 7000
fault = "restart"
node = "all"

[[schedule]]
at_ms = 8000
fault = "add_replica"
node = 4
"#;

fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    Scenario::parse(text, "s.toml", "s")
}

/// The error for `GOOD` with `from` replaced by `to`.
fn bad(from: &str, to: &str) -> ScenarioError {
    assert!(GOOD.contains(from), "{from:?} is not in the base scenario");
    parse(&GOOD.replacen(from, to, 1)).expect_err("the edited scenario must be refused")
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle")
        + 1
}

#[test]
fn a_good_file_parses_with_defaults() {
    let s = parse(GOOD).unwrap();
    assert_eq!(s.name, "s");
    assert_eq!(s.cluster.mode, ShardKind::Raft);
    assert_eq!(s.cluster.nodes + s.cluster.spares, 4);
    assert_eq!(s.schedule.len(), 5);
    assert_eq!(
        s.schedule[2].fault,
        Fault::Kill {
            node: Target::Leader,
            after: None
        }
    );
    assert!(s.checks.linearizability && s.checks.raft_invariants && !s.checks.convergence);
    assert_eq!(s.workload.rate, Workload::default().rate);
    assert_eq!(s.run_ms(), 13_000);
}

#[test]
fn to_toml_round_trips() {
    let s = parse(GOOD).unwrap();
    let again = parse(&s.to_toml()).unwrap_or_else(|e| panic!("{e}\n{}", s.to_toml()));
    assert_eq!(again, s);
}

#[test]
fn unknown_key_names_line_and_key() {
    let e = bad("keys = 4", "keys = 4\nkeyz = 5");
    let text = GOOD.replacen("keys = 4", "keys = 4\nkeyz = 5", 1);
    assert_eq!(e.line, line_of(&text, "keyz"), "{e}");
    assert!(e.to_string().contains("keyz"), "{e}");
    assert!(e.to_string().starts_with("s.toml:"), "{e}");
}

#[test]
fn node_out_of_range_is_refused() {
    let e = bad("node = 4", "node = 9");
    assert_eq!(e.field, "schedule[4].node", "{e}");
    assert!(e.message.contains("out of range 1..=4"), "{e}");
    let text = GOOD.replacen("node = 4", "node = 9", 1);
    assert_eq!(e.line, line_of(&text, "node = 9"));
    let e = bad("groups = [[1], [2, 3]]", "groups = [[1], [2, 7]]");
    assert_eq!(e.field, "schedule[0].groups", "{e}");
}

#[test]
fn heal_with_no_partition_is_refused() {
    let e = bad(
        "fault = \"partition\"\ngroups = [[1], [2, 3]]",
        "fault = \"pause\"\nnode = 1",
    );
    assert_eq!(e.field, "schedule[1].fault", "{e}");
    assert!(e.message.contains("heal with no partition"), "{e}");
}

#[test]
fn time_outside_the_run_is_refused() {
    let e = bad("at_ms = 8000", "at_ms = 10000");
    assert_eq!(e.field, "schedule[4].at_ms", "{e}");
    assert!(e.message.contains("outside the fault phase"), "{e}");
    let e = bad("at_ms = 4000", "at_ms = 500");
    assert!(e.message.contains("time order"), "{e}");
}

#[test]
fn unknown_engine_mode_and_fault_are_refused() {
    let e = bad("engine = \"redb\"", "engine = \"rocksdb\"");
    assert!(
        e.message.contains("rocksdb") && e.message.contains("redb"),
        "{e}"
    );
    assert_eq!(e.line, line_of(GOOD, "engine ="));
    let e = bad("mode = \"raft\"", "mode = \"paxos\"");
    assert!(e.message.contains("paxos"), "{e}");
    let e = bad("fault = \"heal\"", "fault = \"heel\"");
    assert_eq!(e.field, "schedule[1].fault");
    assert!(e.message.contains("unknown fault \"heel\""), "{e}");
}

#[test]
fn fields_that_do_not_belong_are_refused() {
    let e = bad("fault = \"heal\"", "fault = \"heal\"\nnode = 2");
    assert_eq!(e.field, "schedule[1].node", "{e}");
    let e = bad("fault = \"kill\"\nnode = \"leader\"", "fault = \"kill\"");
    assert!(e.message.contains("needs \"node\""), "{e}");
}

#[test]
fn restart_needs_a_stopped_node() {
    let e = bad(
        "fault = \"kill\"\nnode = \"leader\"",
        "fault = \"clock_skew\"\nnode = 1\noffset_ms = 50",
    );
    assert!(e.message.contains("restart with no kill"), "{e}");
}

/// A scenario file turned into an MST one: no spares, no membership change.
fn as_mst(text: &str) -> String {
    text.replace("mode = \"raft\"", "mode = \"mst\"")
        .replace("spares = 1\n", "")
        .replace(
            "[[schedule]]\nat_ms = 8000\nfault = \"add_replica\"\nnode = 4\n",
            "",
        )
}

#[test]
fn mode_specific_faults_and_options_are_refused_elsewhere() {
    let mst = as_mst(GOOD);
    parse(&mst).unwrap();
    let e = parse(&format!(
        "{mst}\n[[schedule]]\nat_ms = 9000\nfault = \"snapshot\"\nnode = 1\n"
    ))
    .unwrap_err();
    assert!(e.message.contains("Raft fault"), "{e}");
    let e = parse(&mst.replace("nodes = 3", "nodes = 3\n[cluster.raft]\nheartbeat_ms = 10"))
        .unwrap_err();
    assert_eq!(e.field, "cluster.raft", "{e}");
    let mem = GOOD.replace("engine = \"redb\"", "engine = \"memory\"");
    let e = parse(&format!(
        "{mem}\n[[schedule]]\nat_ms = 9000\nfault = \"power_loss\"\nnode = 1\nmode = \"drop_all\"\n"
    ))
    .unwrap_err();
    assert!(e.message.contains("redb"), "{e}");
}

#[test]
fn nemesis_kinds_are_checked() {
    let ok = format!("{GOOD}\n[nemesis]\ninterval_ms = [100, 200]\n[nemesis.kinds]\npartition = 1.0\nkill = 0.5\n");
    let s = parse(&ok).unwrap();
    assert_eq!(s.nemesis.unwrap().kinds.len(), 2);
    let e = parse(&ok.replace("kill = 0.5", "explode = 1.0")).unwrap_err();
    assert_eq!(e.field, "nemesis.kinds.explode", "{e}");
    let e = parse(&ok.replace("[100, 200]", "[300, 200]")).unwrap_err();
    assert_eq!(e.field, "nemesis.interval_ms", "{e}");
}

#[test]
fn syntax_errors_name_the_line() {
    let text = GOOD.replacen("nodes = 3", "nodes = = 3", 1);
    let e = parse(&text).unwrap_err();
    assert_eq!(e.line, line_of(&text, "nodes = = 3"), "{e}");
}

#[test]
fn a_raft_node_on_the_memory_engine_cannot_be_killed() {
    let mem = GOOD.replace("engine = \"redb\"", "engine = \"memory\"");
    let e = parse(&mem).unwrap_err();
    assert_eq!(e.line, line_of(&mem, "fault = \"kill\""), "{e}");
    assert!(e.to_string().contains("s.toml"), "{e}");
    assert!(e.message.contains("memory engine"), "{e}");
    assert!(e.message.contains("log and vote"), "{e}");
    let nemesis = format!("{GOOD}\n[nemesis]\n[nemesis.kinds]\nkill = 1.0\n")
        .replace("engine = \"redb\"", "engine = \"memory\"")
        .replace(
            "fault = \"kill\"\nnode = \"leader\"",
            "fault = \"pause\"\nnode = \"leader\"",
        )
        .replace(
            "fault = \"restart\"\nnode = \"all\"",
            "fault = \"resume\"\nnode = \"all\"",
        );
    let e = parse(&nemesis).unwrap_err();
    assert_eq!(e.field, "nemesis.kinds.kill", "{e}");
    // Other modes on the memory engine may kill: they do not claim a durable log.
    let mst = as_mst(&mem);
    parse(&mst).unwrap();
}

#[test]
fn armed_cuts_parse_round_trip_and_are_checked() {
    let armed = |after: &str| {
        format!("{GOOD}\n[[schedule]]\nat_ms = 9000\nfault = \"power_loss\"\nnode = 2\nmode = \"drop_all\"\nafter = {after}\n")
    };
    let s = parse(&armed("{ votes = 1 }")).unwrap();
    let last = s.schedule.last().unwrap();
    assert_eq!(
        last.fault,
        Fault::PowerLoss {
            node: Target::Node(2),
            mode: crate::storage::PowerLossMode::DropAll,
            after: Some(crate::scenario::CutAfter::Votes(1)),
        }
    );
    assert_eq!(parse(&s.to_toml()).unwrap(), s);
    let text = armed("{ syncs = 0 }");
    let e = parse(&text).unwrap_err();
    assert_eq!(
        e.field,
        format!("schedule[{}].after", s.schedule.len() - 1),
        "{e}"
    );
    assert_eq!(e.line, line_of(&text, "after = { syncs = 0 }"), "{e}");
    assert!(parse(&armed("{ sinks = 2 }")).is_err());
    // Syncs are counted on simulated disks only.
    let fjall = armed("{ syncs = 2 }")
        .replace("engine = \"redb\"", "engine = \"fjall\"")
        .replace("fault = \"power_loss\"", "fault = \"kill\"")
        .replace("mode = \"drop_all\"\n", "");
    let e = parse(&fjall).unwrap_err();
    assert!(e.message.contains("simulated disks"), "{e}");
    parse(&fjall.replace("syncs = 2", "appends = 2")).unwrap();
    // So are an install's disk operations, which are Raft's too.
    let e = parse(&fjall.replace("syncs = 2", "install_ops = 2")).unwrap_err();
    assert!(e.message.contains("simulated disks"), "{e}");
    let s = parse(&armed("{ install_ops = 5 }")).unwrap();
    assert_eq!(parse(&s.to_toml()).unwrap(), s);
    let e = parse(&as_mst(&armed("{ install_ops = 5 }"))).unwrap_err();
    assert!(e.message.contains("Raft's"), "{e}");
}

#[test]
fn an_armed_isolation_waits_for_raft_events_not_syncs() {
    let armed = |after: &str| {
        format!(
            "{GOOD}\n[[schedule]]\nat_ms = 9000\nfault = \"isolate\"\nnode = 2\nafter = {after}\n"
        )
    };
    let s = parse(&armed("{ chunks = 3 }")).unwrap();
    assert_eq!(
        s.schedule.last().unwrap().fault,
        Fault::Isolate {
            node: Target::Node(2),
            after: Some(crate::scenario::CutAfter::Chunks(3)),
        }
    );
    assert_eq!(parse(&s.to_toml()).unwrap(), s);
    let text = armed("{ syncs = 3 }");
    let e = parse(&text).unwrap_err();
    assert_eq!(e.line, line_of(&text, "after = { syncs = 3 }"), "{e}");
    assert!(e.message.contains("waits for Raft events"), "{e}");
    assert!(parse(&armed("{ install_ops = 3 }")).is_err());
    // Chunks are Raft's.
    let e = parse(&as_mst(&armed("{ chunks = 1 }"))).unwrap_err();
    assert!(e.message.contains("Raft's"), "{e}");
}

#[test]
fn a_killed_memory_raft_node_must_be_replaced_not_restarted() {
    let base = "duration_ms = 12000\nquiet_ms = 3000\n[cluster]\nmode = \"raft\"\nengine = \"memory\"\nnodes = 3\nspares = 1\n";
    let entry = |at: u64, fault: &str, node: &str| {
        format!("[[schedule]]\nat_ms = {at}\nfault = \"{fault}\"\nnode = {node}\n")
    };
    let kill = entry(3000, "kill", "2");
    let replaced = format!(
        "{base}{kill}{}{}",
        entry(4000, "remove_replica", "2"),
        entry(5000, "add_replica", "4")
    );
    parse(&replaced).unwrap();
    // Never replaced: refused at the kill.
    let text = format!("{base}{kill}");
    let e = parse(&text).unwrap_err();
    assert_eq!(e.line, line_of(&text, "node = 2"), "{e}");
    assert!(e.message.contains("never replaced"), "{e}");
    // Restarted as itself: refused at the restart.
    let text = format!("{base}{kill}{}", entry(4000, "restart", "2"));
    let e = parse(&text).unwrap_err();
    assert!(e.message.contains("only as a new member"), "{e}");
    // Nor after it was replaced, nor through a restart of every down node.
    for restart in [
        entry(6000, "restart", "2"),
        entry(6000, "restart", "\"all\""),
    ] {
        let text = format!("{replaced}{restart}");
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("only as a new member"), "{e}");
    }
    // A kill of whichever node leads cannot be matched to a replacement.
    let text = format!("{base}{}", entry(3000, "kill", "\"leader\""));
    assert!(parse(&text).unwrap_err().message.contains("memory engine"));
}
