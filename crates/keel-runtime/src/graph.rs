//! The logical job graph: stages of chained operators, each with a parallelism, fed either by a
//! source or by the previous stage through a partitioning. The SQL planner and the Rust API both
//! build this; the job runner turns it into tasks.
//!
//! Invariants: stage 0 has a source; every other stage has a source or reads one or two (a join)
//! earlier stages; operator uids are unique within the graph (they name state in checkpoints);
//! a stage runs 1 to `DEFAULT_KEY_GROUPS` (128) subtasks: keyed state is divided into that many
//! key groups, so a subtask beyond them would own none, and an exchange holds parallelism²
//! bounded channels (4,096 subtasks took 22 GB in two minutes); a job runs at most
//! `MAX_SUBTASKS` subtasks, one thread each.

use crate::error::{Result, RuntimeError};
use crate::exchange::Partitioning;
use crate::operator::{OperatorFactory, SourceFactory};

/// The most subtasks (threads) one job runs, over all its stages: 4,096, such as 32 stages at
/// parallelism 128. A job at parallelism 128 on a small input uses about 0.25 MB per subtask.
pub const MAX_SUBTASKS: u32 = 4096;

/// One operator in a stage's chain.
#[derive(Clone)]
pub struct OperatorSpec {
    /// Stable identifier naming this operator's state in checkpoints.
    pub uid: String,
    pub factory: OperatorFactory,
}

/// Where a stage's input comes from.
#[derive(Clone)]
pub enum StageInput {
    Source {
        uid: String,
        factory: SourceFactory,
    },
    Upstream {
        stage: usize,
        partitioning: Partitioning,
    },
    /// Two earlier stages (a join): the first operator of the chain gets each batch with the
    /// side it came from (0 = left, 1 = right) through `Operator::process_side`.
    TwoInputs {
        left: (usize, Partitioning),
        right: (usize, Partitioning),
    },
}

impl StageInput {
    /// The stages this input reads, with their partitioning, in side order.
    pub fn upstreams(&self) -> Vec<(usize, &Partitioning)> {
        match self {
            StageInput::Source { .. } => vec![],
            StageInput::Upstream { stage, partitioning } => vec![(*stage, partitioning)],
            StageInput::TwoInputs { left, right } => vec![(left.0, &left.1), (right.0, &right.1)],
        }
    }
}

/// A set of identical subtasks running one chain.
#[derive(Clone)]
pub struct StageSpec {
    pub name: String,
    pub parallelism: u32,
    pub input: StageInput,
    pub chain: Vec<OperatorSpec>,
}

/// A whole job.
#[derive(Clone, Default)]
pub struct JobGraph {
    pub stages: Vec<StageSpec>,
}

impl JobGraph {
    /// Checks the structural invariants above.
    pub fn validate(&self) -> Result<()> {
        let mut uids = std::collections::HashSet::new();
        for (i, stage) in self.stages.iter().enumerate() {
            let most = keel_types::DEFAULT_KEY_GROUPS;
            if stage.parallelism == 0 || stage.parallelism > most {
                return Err(RuntimeError::User(format!(
                    "stage '{}' has parallelism {}; a stage runs 1 to {most} subtasks (keyed state is divided into \
                     {most} key groups, and each subtask needs one)",
                    stage.name, stage.parallelism
                )));
            }
            match &stage.input {
                StageInput::Source { uid, .. } => {
                    if !uids.insert(uid.clone()) {
                        return Err(RuntimeError::Internal(format!("operator uid '{uid}' is used twice")));
                    }
                }
                input => {
                    for (up, partitioning) in input.upstreams() {
                        if up >= i {
                            return Err(RuntimeError::Internal(format!(
                                "stage {i} reads stage {up}, which is not before it"
                            )));
                        }
                        if *partitioning == Partitioning::Forward && self.stages[up].parallelism != stage.parallelism {
                            return Err(RuntimeError::Internal(format!(
                                "forward edge into stage {i} changes parallelism"
                            )));
                        }
                    }
                }
            }
            for op in &stage.chain {
                if !uids.insert(op.uid.clone()) {
                    return Err(RuntimeError::Internal(format!("operator uid '{}' is used twice", op.uid)));
                }
            }
        }
        let subtasks: u64 = self.stages.iter().map(|s| u64::from(s.parallelism)).sum();
        if subtasks > u64::from(MAX_SUBTASKS) {
            return Err(RuntimeError::User(format!(
                "the job would run {subtasks} subtasks ({} stages), over the limit of {MAX_SUBTASKS} threads; use a \
                 lower --parallelism, or run the INSERTs of the pipeline as several jobs",
                self.stages.len()
            )));
        }
        match self.stages.first().map(|s| &s.input) {
            Some(StageInput::Source { .. }) => Ok(()),
            _ => Err(RuntimeError::Internal("a job graph must start with a source stage".into())),
        }
    }

    /// Operator uids with the parallelism of their stage (recorded in checkpoint manifests).
    pub fn operator_parallelism(&self) -> Vec<(String, u32)> {
        let mut out = vec![];
        for s in &self.stages {
            if let StageInput::Source { uid, .. } = &s.input {
                out.push((uid.clone(), s.parallelism));
            }
            out.extend(s.chain.iter().map(|o| (o.uid.clone(), s.parallelism)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source_stage(parallelism: u32) -> JobGraph {
        let factory: SourceFactory = std::sync::Arc::new(|_| Err(RuntimeError::Internal("not run".into())));
        let input = StageInput::Source { uid: "s".into(), factory };
        JobGraph { stages: vec![StageSpec { name: "scan".into(), parallelism, input, chain: vec![] }] }
    }

    #[test]
    fn a_parallelism_of_zero_or_beyond_the_key_groups_is_a_user_error() {
        for p in [0, 129, 4096] {
            let err = source_stage(p).validate().unwrap_err();
            assert_eq!(err.class(), keel_types::ErrorClass::User, "{err}");
            assert!(err.to_string().contains(&format!("parallelism {p}; a stage runs 1 to 128")), "{err}");
        }
        assert!(source_stage(128).validate().is_ok());
    }

    #[test]
    fn a_job_runs_a_bounded_number_of_subtasks() {
        let mut g = source_stage(128);
        let forward = StageInput::Upstream { stage: 0, partitioning: Partitioning::Forward };
        let stage = StageSpec { name: "next".into(), parallelism: 128, input: forward, chain: vec![] };
        g.stages.extend(std::iter::repeat_n(stage, (MAX_SUBTASKS / 128) as usize - 1));
        assert!(g.validate().is_ok(), "{} stages at 128", g.stages.len());
        g.stages.push(g.stages[1].clone());
        let err = g.validate().unwrap_err();
        assert_eq!(err.class(), keel_types::ErrorClass::User);
        assert!(err.to_string().contains("4224 subtasks (33 stages), over the limit of 4096"), "{err}");
    }
}
