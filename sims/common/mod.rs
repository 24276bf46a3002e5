//! What every simulation sweep in `sims/` shares: the seeds to run and the one seed loop.

use std::future::Future;

/// The seeds to run: `ODGM_SIM_SEED=S` runs one seed (replay), `ODGM_SIM_SEEDS=N` sweeps
/// `0..N`, otherwise `0..default`.
pub fn seeds(default: u64) -> Vec<u64> {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    match (var("ODGM_SIM_SEED"), var("ODGM_SIM_SEEDS")) {
        (Some(seed), _) => vec![seed],
        (None, Some(n)) => (0..n).collect(),
        (None, None) => (0..default).collect(),
    }
}

/// Runs `body` once per seed of [`seeds`]`(default)`, each in a fresh simulation built from
/// that seed. A seed that fails (panics) is named with the command that replays it, and
/// fails the test.
#[allow(dead_code)] // the scenario sweep runs its seeds in child processes instead
pub fn sweep<F, Fut>(test: &str, default: u64, body: F)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    for seed in seeds(default) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let rt =
                madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
            rt.block_on(body(seed));
        }));
        if r.is_err() {
            panic!(
                "seed {seed} failed; replay with: ODGM_SIM_SEED={seed} cargo test --test {} {test}",
                env!("CARGO_CRATE_NAME")
            );
        }
    }
}
