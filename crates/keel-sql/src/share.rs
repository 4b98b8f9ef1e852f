//! Planning a subquery once when a query uses it more than once (Nexmark q5 reads the same HOP
//! aggregate on both sides of a join). `shared_subplans` finds the largest subtrees of the
//! optimized plan that occur at least twice; the translator plans each of them once and hands
//! its output stage to every consumer through a stage of its own (`PlannedInput::Forward`), so
//! that what one consumer adds cannot change what another reads. `elide_forwards` then removes
//! the forwarding stages that ended up with no operators, pointing their readers at the shared
//! stage.
//!
//! Invariants: only subtrees equal in every respect (DataFusion's structural equality: same
//! tables, columns, expressions and names) are shared, so a consumer reads exactly the rows it
//! would have computed itself; after `elide_forwards` every stage still reads only earlier stages
//! and the last stage is still the sink's.

use crate::plan::{PlannedInput, PlannedStage};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::LogicalPlan;
use std::collections::{HashMap, HashSet};

/// The maximal subtrees of `plan` that occur at least twice (one occurring only inside a larger
/// shared subtree is not listed: planning the larger one once plans it once too).
pub(crate) fn shared_subplans(plan: &LogicalPlan) -> HashSet<LogicalPlan> {
    let mut counts: HashMap<&LogicalPlan, usize> = HashMap::new();
    let _ = plan.apply(|node| {
        *counts.entry(node).or_default() += 1;
        Ok(TreeNodeRecursion::Continue)
    });
    let mut shared = HashSet::new();
    let _ = plan.apply(|node| {
        if counts.get(node).copied().unwrap_or(0) >= 2 {
            shared.insert(node.clone());
            return Ok(TreeNodeRecursion::Jump);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    shared
}

/// Removes stages that only forward another stage's rows (no operators, not the last stage):
/// their readers read the forwarded stage directly. Indices of later stages shift down.
pub(crate) fn elide_forwards(stages: &mut Vec<PlannedStage>) {
    let mut i = 0;
    while i < stages.len() {
        let removable = i + 1 < stages.len() && stages[i].ops.is_empty();
        let PlannedInput::Forward { from } = stages[i].input else {
            i += 1;
            continue;
        };
        if !removable {
            i += 1;
            continue;
        }
        stages.remove(i);
        // Readers of stage i read `from` (which is before i); stages after i move down by one.
        let fix = |s: &mut usize| {
            if *s == i {
                *s = from;
            } else if *s > i {
                *s -= 1;
            }
        };
        for st in stages.iter_mut() {
            match &mut st.input {
                PlannedInput::Source(_) => {}
                PlannedInput::Exchange { from, .. } | PlannedInput::Forward { from } => fix(from),
                PlannedInput::Join { left, right } => {
                    fix(&mut left.0);
                    fix(&mut right.0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{PlannedOp, Step};
    use std::sync::Arc;

    fn stage(input: PlannedInput, ops: usize) -> PlannedStage {
        let schema = Arc::new(arrow::datatypes::Schema::empty());
        PlannedStage { input, ops: (0..ops).map(|_| PlannedOp::Step(Step::Project(vec![], schema.clone()))).collect() }
    }

    fn inputs(stages: &[PlannedStage]) -> Vec<String> {
        stages
            .iter()
            .map(|s| match &s.input {
                PlannedInput::Source(_) => "source".to_string(),
                PlannedInput::Exchange { from, .. } => format!("exchange {from}"),
                PlannedInput::Forward { from } => format!("forward {from}"),
                PlannedInput::Join { left, right } => format!("join {} {}", left.0, right.0),
            })
            .collect()
    }

    #[test]
    fn nexmark_q5_plans_its_hop_aggregate_once_from_slices() {
        let sql = format!(
            "{}\n{}",
            include_str!("../../../nexmark/ddl.sql").replace("${EVENTS}", "1000"),
            include_str!("../../../nexmark/q5.sql")
        );
        let opts = crate::PipelineOptions {
            job: "q5".into(),
            data_dir: ".".into(),
            parallelism: 1,
            bounded: true,
            udfs: vec![],
            udafs: vec![],
        };
        let planned = crate::plan(&sql, &opts).map_err(|e| e.to_string()).unwrap();
        let stages = &planned.inserts[0].stages;
        let sources = stages.iter().filter(|s| matches!(s.input, PlannedInput::Source(_))).count();
        let aggregates: Vec<Option<(i64, i64)>> = (stages.iter().flat_map(|s| &s.ops))
            .filter_map(|o| match o {
                PlannedOp::WindowAggregate { spec, .. } => Some(spec.hop_slices),
                _ => None,
            })
            .collect();
        assert_eq!(sources, 1, "bid is generated once");
        // The per-auction HOP count (sliced) once, and the MAX over it.
        assert_eq!(aggregates, [Some((10_000, 2_000)), None]);
        let forwards = stages.iter().filter(|s| matches!(s.input, PlannedInput::Forward { .. })).count();
        assert_eq!(forwards, 2, "both consumers of the count project it in stages of their own");
    }

    #[test]
    fn empty_forwarding_stages_are_removed_and_readers_renumbered() {
        // 0: the shared stage, 1: an empty fork, 2: a fork with a projection, 3: an aggregate
        // over the empty fork, 4: the join of the projected fork and the aggregate (the sink's).
        let mut stages = vec![
            stage(PlannedInput::Exchange { from: 0, keys: vec![] }, 1),
            stage(PlannedInput::Forward { from: 0 }, 0),
            stage(PlannedInput::Forward { from: 0 }, 1),
            stage(PlannedInput::Exchange { from: 1, keys: vec![0] }, 1),
            stage(PlannedInput::Join { left: (2, vec![]), right: (3, vec![]) }, 1),
        ];
        elide_forwards(&mut stages);
        assert_eq!(inputs(&stages), ["exchange 0", "forward 0", "exchange 0", "join 1 2"]);
        // An empty forwarding stage that is last (the sink's) stays.
        let mut stages = vec![stage(PlannedInput::Exchange { from: 0, keys: vec![] }, 1)];
        stages.push(stage(PlannedInput::Forward { from: 0 }, 0));
        elide_forwards(&mut stages);
        assert_eq!(inputs(&stages), ["exchange 0", "forward 0"]);
    }
}
