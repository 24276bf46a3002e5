//! What every simulation sweep in `sims/` shares.

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
