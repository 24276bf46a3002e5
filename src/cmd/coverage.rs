//! What a set of runs reached: the coverage table `sweep` and `chaos` print (each corner,
//! the runs that hit it and the first of them, and the corners no run hit), its JSON form
//! (`--coverage FILE`), and `odgm-sim coverage`, which prints the catalogue of corners or
//! merges coverage files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::coverage::{Corner, Expect};

/// The first run that reached a corner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstHit {
    /// Its scenario.
    pub scenario: String,
    /// Its seed.
    pub seed: u64,
}

/// One corner's line in the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CornerLine {
    /// The corner.
    pub corner: Corner,
    /// Runs that reached it.
    pub runs: u64,
    /// The first run that did (in the order the runs were added).
    pub first: Option<FirstHit>,
}

/// Which corners a set of runs reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    runs: u64,
    hits: BTreeMap<Corner, (u64, FirstHit)>,
}

/// The JSON form of a [`Coverage`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CoverageFile {
    /// Runs counted.
    pub runs: u64,
    /// Every corner of the catalogue, reached or not.
    pub corners: Vec<CornerLine>,
    /// The corners no run reached.
    pub never_hit: Vec<Corner>,
}

impl Coverage {
    /// Counts one run of `scenario` with `seed` that reached `corners`.
    pub fn add(&mut self, scenario: &str, seed: u64, corners: &[Corner]) {
        self.runs += 1;
        for &c in corners {
            self.hits
                .entry(c)
                .or_insert_with(|| {
                    (
                        0,
                        FirstHit {
                            scenario: scenario.to_string(),
                            seed,
                        },
                    )
                })
                .0 += 1;
        }
    }

    /// Runs counted.
    pub fn runs(&self) -> u64 {
        self.runs
    }

    /// How many runs reached `corner`.
    pub fn hits(&self, corner: Corner) -> u64 {
        self.hits.get(&corner).map_or(0, |h| h.0)
    }

    /// Distinct corners reached.
    pub fn reached(&self) -> usize {
        self.hits.len()
    }

    /// The corners no run reached, in catalogue order.
    pub fn never_hit(&self) -> Vec<Corner> {
        Corner::ALL
            .iter()
            .copied()
            .filter(|c| !self.hits.contains_key(c))
            .collect()
    }

    /// The corners `expect` says must be reached that no run reached.
    pub fn missing(&self, expect: Expect) -> Vec<Corner> {
        self.never_hit()
            .into_iter()
            .filter(|c| c.expect() == expect)
            .collect()
    }

    /// Adds another table's runs (as if its runs came after these).
    pub fn merge(&mut self, other: &Coverage) {
        self.runs += other.runs;
        for (c, (n, first)) in &other.hits {
            self.hits.entry(*c).or_insert_with(|| (0, first.clone())).0 += n;
        }
    }

    /// The JSON form.
    pub fn to_file(&self) -> CoverageFile {
        CoverageFile {
            runs: self.runs,
            corners: Corner::ALL
                .iter()
                .map(|&c| CornerLine {
                    corner: c,
                    runs: self.hits(c),
                    first: self.hits.get(&c).map(|h| h.1.clone()),
                })
                .collect(),
            never_hit: self.never_hit(),
        }
    }

    /// A table read back from its JSON form.
    pub fn from_file(f: &CoverageFile) -> Coverage {
        Coverage {
            runs: f.runs,
            hits: f
                .corners
                .iter()
                .filter_map(|l| Some((l.corner, (l.runs, l.first.clone()?))))
                .filter(|(_, (n, _))| *n > 0)
                .collect(),
        }
    }

    /// Writes the JSON form to `path`.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(&self.to_file()).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Reads a file `write` wrote.
    pub fn read(path: &Path) -> Result<Coverage, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let f: CoverageFile = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a coverage file: {e}", path.display()))?;
        Ok(Coverage::from_file(&f))
    }

    /// The table as text: one line per corner reached (runs, share of runs, first run),
    /// then the corners no run reached, marked `!` where the shipped sweep must reach them.
    pub fn render(&self) -> String {
        let mut out = format!(
            "coverage: {} of {} corners reached over {} run(s)\n",
            self.hits.len(),
            Corner::ALL.len(),
            self.runs
        );
        let width = Corner::ALL
            .iter()
            .map(|c| c.name().len())
            .max()
            .unwrap_or(0);
        for &c in Corner::ALL {
            if let Some((n, first)) = self.hits.get(&c) {
                out += &format!(
                    "  {:<width$}  {:>6} run(s) {:>5.1}%  first: {} seed {}\n",
                    c.name(),
                    n,
                    100.0 * *n as f64 / self.runs.max(1) as f64,
                    first.scenario,
                    first.seed
                );
            }
        }
        let never = self.never_hit();
        if !never.is_empty() {
            out += &format!("  never hit ({}):\n", never.len());
            for c in never {
                let mark = if c.expect() == Expect::Sweep {
                    "!"
                } else {
                    " "
                };
                out += &format!("  {mark} {:<width$}  {}\n", c.name(), c.why().trim());
            }
        }
        out
    }
}

/// Arguments of `odgm-sim coverage`.
#[derive(Debug, Args)]
pub struct CoverageArgs {
    /// Coverage files (`sweep --coverage`, `chaos --coverage`) to merge and print; with none,
    /// print the catalogue of corners.
    pub files: Vec<PathBuf>,
    /// Write the merged table to this file as JSON.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `odgm-sim coverage`.
pub fn coverage_command(args: &CoverageArgs) -> Result<ExitCode, String> {
    if args.files.is_empty() {
        print!("{}", catalogue());
        return Ok(ExitCode::SUCCESS);
    }
    let mut all = Coverage::default();
    for f in &args.files {
        all.merge(&Coverage::read(f)?);
    }
    print!("{}", all.render());
    if let Some(out) = &args.out {
        all.write(out)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Every corner: its name, who must reach it, and why it matters.
pub fn catalogue() -> String {
    let mut out = format!(
        "{} corners (sweep: the shipped `cargo test` sweep must reach it; chaos: not required of it)\n",
        Corner::ALL.len()
    );
    let width = Corner::ALL
        .iter()
        .map(|c| c.name().len())
        .max()
        .unwrap_or(0);
    for &c in Corner::ALL {
        let expect = match c.expect() {
            Expect::Sweep => "sweep",
            Expect::Chaos => "chaos",
        };
        out += &format!("  {:<width$}  {expect:<5}  {}\n", c.name(), c.why().trim());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_runs_first_hits_and_what_no_run_reached() {
        let mut cov = Coverage::default();
        cov.add("a", 3, &[Corner::RaftPurge, Corner::MstInSync]);
        cov.add("b", 1, &[Corner::RaftPurge]);
        cov.add("c", 0, &[]);
        assert_eq!(cov.runs(), 3);
        assert_eq!(cov.hits(Corner::RaftPurge), 2);
        assert_eq!(cov.hits(Corner::NetDuplicated), 0);
        assert_eq!(cov.reached(), 2);
        assert_eq!(cov.never_hit().len(), Corner::ALL.len() - 2);
        assert!(cov.missing(Expect::Sweep).contains(&Corner::NetDuplicated));
        assert!(!cov.missing(Expect::Sweep).contains(&Corner::RaftPurge));
        let text = cov.render();
        assert!(text.contains("raft.purge"), "{text}");
        assert!(text.contains("first: a seed 3"), "{text}");
        assert!(text.contains("! net.duplicated"), "{text}");
        // The JSON form reads back to the same table, and merging adds runs.
        let back = Coverage::from_file(
            &serde_json::from_str(&serde_json::to_string(&cov.to_file()).unwrap()).unwrap(),
        );
        assert_eq!(back, cov);
        let mut merged = back.clone();
        merged.merge(&cov);
        assert_eq!(merged.runs(), 6);
        assert_eq!(merged.hits(Corner::RaftPurge), 4);
        assert!(catalogue().contains("raft.truncate-conflict"));
    }
}
