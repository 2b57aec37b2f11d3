//! The results of a whole `bench` run: each benchmark's report (absent when it was not asked
//! for), the goals over all of them, and benchmarks that failed; as tables and as JSON.

use serde::Serialize;

use super::Section;
use super::catalog::CatalogReport;
use super::common;
use super::fanout::FanoutReport;
use super::git::GitReport;
use super::report::Report;
use super::sync::SyncReport;

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub mode: String,
    pub dir: String,
    pub cpus: usize,
    /// The benchmarks this run was asked for.
    pub sections: Vec<Section>,
    pub raft: Option<Report>,
    pub catalog: Option<CatalogReport>,
    pub sync: Option<SyncReport>,
    pub git: Option<GitReport>,
    pub fanout: Option<FanoutReport>,
    pub goals_met: usize,
    pub goals_total: usize,
    pub failures: Vec<Failure>,
}

/// A benchmark that could not finish.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub section: Section,
    pub error: String,
}

impl Summary {
    pub fn new(mode: &str, dir: String, sections: &[Section]) -> Self {
        Summary {
            mode: mode.to_string(),
            dir,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            sections: sections.to_vec(),
            raft: None,
            catalog: None,
            sync: None,
            git: None,
            fanout: None,
            goals_met: 0,
            goals_total: 0,
            failures: Vec::new(),
        }
    }

    pub fn fail(&mut self, section: Section, error: &anyhow::Error) {
        eprintln!("{}: FAILED: {error:#}", section.name());
        self.failures.push(Failure {
            section,
            error: format!("{error:#}"),
        });
    }

    /// Counts the goals of every report.
    pub fn finish(mut self) -> Self {
        let (mut met, mut total) = self.raft.as_ref().map_or((0, 0), |r| (r.goals_met, r.goals_total));
        let (m, t) = common::tally(
            self.catalog
                .iter()
                .flat_map(|c| c.goals())
                .chain(self.sync.iter().flat_map(|s| s.goals()))
                .chain(self.git.iter().flat_map(|g| g.goals()))
                .chain(self.fanout.iter().flat_map(|f| f.goals())),
        );
        met += m;
        total += t;
        self.goals_met = met;
        self.goals_total = total;
        self
    }

    pub fn table(&self) -> String {
        let mut parts = Vec::new();
        if let Some(r) = &self.raft {
            parts.push(r.table());
        }
        if let Some(c) = &self.catalog {
            parts.push(c.table(&self.mode, &self.dir));
        }
        if let Some(s) = &self.sync {
            parts.push(s.table(&self.mode, &self.dir));
        }
        if let Some(g) = &self.git {
            parts.push(g.table(&self.mode, &self.dir));
        }
        if let Some(f) = &self.fanout {
            parts.push(f.table(&self.mode, &self.dir));
        }
        let mut out = parts.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!(
            "all benchmarks: goals met: {} of {}\n",
            self.goals_met, self.goals_total
        ));
        for f in &self.failures {
            out.push_str(&format!("{}: FAILED: {}\n", f.section.name(), f.error));
        }
        out
    }
}
