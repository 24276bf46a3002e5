//! The simulation tests in `sims/` compile only in the simulation build (`--cfg madsim`,
//! which `.cargo/config.toml` sets). Any non-empty `RUSTFLAGS` replaces that setting and
//! builds real mode, where those tests compile to nothing and `cargo test` would pass
//! without running a single simulation. This test makes that loud.

#[cfg(not(madsim))]
#[test]
fn simulation_tests_need_the_simulation_build() {
    panic!(
        "this is the real-mode build: RUSTFLAGS={:?} replaced .cargo/config.toml's \
         `--cfg madsim`, so the simulation tests in sims/ compiled to nothing. Run `cargo \
         test` with RUSTFLAGS unset, or add `--cfg madsim` to it. (Real mode has its own \
         test: `RUSTFLAGS= cargo test --test raft_real`.)",
        option_env!("RUSTFLAGS").unwrap_or("")
    );
}
