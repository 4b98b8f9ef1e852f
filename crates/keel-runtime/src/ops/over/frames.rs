//! The frame computation of the OVER aggregate: the rows a watermark releases, with the history
//! their partitions kept, become scratch accumulator slots; a plan of merges computes every
//! frame; the rows later frames can need become the partitions' new history.
//!
//! Invariant: the frames of a partition are its rows in (time, arrival) order seen through a
//! queue whose both ends only move forward. The queue is two stacks: the front holds suffix
//! aggregates (rebuilt from the back when it runs empty), the back one running aggregate; a frame
//! is the merge of the front's top and the back, so no accumulator ever needs to retract.

use super::{Frame, OverAggregate, i64s};
use crate::error::{Result, RuntimeError};
use crate::ops::accumulators::Accumulator;
use arrow::array::{ArrayRef, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::datatypes::UInt32Type;

/// One step of a frame computation over scratch accumulator slots.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Merge slot `.1` into slot `.0`.
    Merge(u32, u32),
    Reset(u32),
}

impl OverAggregate {
    /// Computes the output for `ready` (buffer schema, sorted by partition, time, arrival) and
    /// moves the emitted rows into the partitions' history.
    pub(super) fn emit(&mut self, ready: &RecordBatch) -> Result<RecordBatch> {
        let (ni, n, running) = (self.ni(), ready.num_rows(), self.is_running());
        let times = i64s(ready.column(ni));
        let pids = ready.column(ni + 2).as_primitive::<UInt32Type>().values();
        // Partition segments: (pid, first ready row, rows, first history row, history rows).
        let mut segs: Vec<(u32, usize, usize, usize, usize)> = Vec::new();
        for (i, &p) in pids.iter().enumerate() {
            match segs.last_mut() {
                Some(s) if s.0 == p => s.2 += 1,
                _ => segs.push((p, i, 1, 0, 0)),
            }
        }
        let mut hist = Vec::new();
        let mut hn = 0;
        for s in &mut segs {
            if let Some(h) = self.partitions[s.0 as usize].history.take() {
                (s.3, s.4) = (hn, h.num_rows());
                hn += h.num_rows();
                hist.push(h);
            }
        }
        let hist = concat_batches(&self.history_schema, &hist).map_err(RuntimeError::arrow("OVER history"))?;
        let htimes = i64s(hist.column(0));
        // Scratch slots: history leaves, ready leaves, running carries, the back aggregate, results.
        let carry = hn + n;
        let back = carry + if running { segs.len() } else { 0 };
        let results = back + 1;
        let mut out_slots: Vec<u32> = (results..results + n).map(|s| s as u32).collect();
        let mut plan = Vec::new();
        let mut elems = Vec::new();
        for (si, &(_, start, len, h0, hl)) in segs.iter().enumerate() {
            elems.clear();
            if running {
                elems.push(((carry + si) as u32, i64::MIN));
            }
            elems.extend((h0..h0 + hl).map(|j| (j as u32, htimes[j])));
            let first = elems.len();
            elems.extend((start..start + len).map(|r| ((hn + r) as u32, times[r])));
            plan_frames(self.frame, &elems, first, back as u32, &mut out_slots[start..start + len], &mut plan);
        }
        let run_pids: Vec<u32> = if running { segs.iter().map(|s| s.0).collect() } else { Vec::new() };
        let carries: Vec<u32> = (carry..carry + run_pids.len()).map(|s| s as u32).collect();
        // A running partition's last result is its new running aggregate.
        let finals: Vec<u32> = segs.iter().filter(|_| running).map(|s| out_slots[s.1 + s.2 - 1]).collect();
        let hist_leaves: Vec<u32> = (0..hn as u32).collect();
        let ready_leaves: Vec<u32> = (hn as u32..(hn + n) as u32).collect();
        let mut cols = ready.columns()[..ni].to_vec();
        for (i, call) in self.spec.aggregates.iter().enumerate() {
            let mut acc = Accumulator::for_call(call, &self.spec.input_schema, false)?;
            acc.ensure(results + n);
            let hist_arg =
                call.arg.and_then(|c| self.arg_cols.iter().position(|&a| a == c)).map(|a| hist.column(a + 1));
            acc.update(&hist_leaves, hist_arg)?;
            acc.update(&ready_leaves, call.arg.map(|c| ready.column(c)))?;
            if running {
                let state: Vec<ArrayRef> = self.running[i].state(&run_pids, "s")?.into_iter().map(|c| c.1).collect();
                acc.restore(&carries, &state)?;
            }
            for op in &plan {
                match *op {
                    Op::Merge(into, from) => acc.merge(into as usize, from as usize)?,
                    Op::Reset(s) => acc.reset(s as usize),
                }
            }
            let col = acc.evaluate(&out_slots, &call.output_type)?;
            let want = self.spec.output_schema.field(ni + i).data_type();
            cols.push(if col.data_type() == want {
                col
            } else {
                arrow::compute::cast(&col, want).map_err(RuntimeError::arrow("OVER result"))?
            });
            if running {
                let state: Vec<ArrayRef> = acc.state(&finals, "s")?.into_iter().map(|c| c.1).collect();
                for &p in &run_pids {
                    self.running[i].reset(p as usize);
                }
                self.running[i].restore(&run_pids, &state)?;
            }
        }
        if !running {
            let mut proj = vec![ready.column(ni).clone()];
            proj.extend(self.arg_cols.iter().map(|&c| ready.column(c).clone()));
            let proj =
                RecordBatch::try_new(self.history_schema.clone(), proj).map_err(RuntimeError::arrow("OVER history"))?;
            let all =
                concat_batches(&self.history_schema, [&hist, &proj]).map_err(RuntimeError::arrow("OVER history"))?;
            let all_times = i64s(all.column(0));
            for &(p, start, len, h0, hl) in &segs {
                // Rows in `all` are numbered like the leaf slots.
                let rows: Vec<u32> = (h0..h0 + hl).chain(hn + start..hn + start + len).map(|r| r as u32).collect();
                let cut = self.history_cut(&rows.iter().map(|&r| all_times[r as usize]).collect::<Vec<_>>());
                let kept = if cut == rows.len() {
                    None
                } else {
                    let idx = UInt32Array::from(rows[cut..].to_vec());
                    Some(take_record_batch(&all, &idx).map_err(RuntimeError::arrow("OVER history"))?)
                };
                self.set_history(p, kept);
            }
        }
        for &(p, _, len, _, _) in &segs {
            self.partitions[p as usize].pending -= len;
            self.maybe_free(p);
        }
        let out =
            RecordBatch::try_new(self.spec.output_schema.clone(), cols).map_err(RuntimeError::arrow("OVER output"))?;
        let by_time: Vec<SortColumn> =
            [ni, ni + 1].iter().map(|&c| SortColumn { values: ready.column(c).clone(), options: None }).collect();
        let order = lexsort_to_indices(&by_time, None).map_err(RuntimeError::arrow("OVER output"))?;
        take_record_batch(&out, &order).map_err(RuntimeError::arrow("OVER output"))
    }
}

/// Appends to `plan` the slot operations that compute the frames of one partition: `elems` are
/// its (slot, time) in order, those from `first` on are the rows to emit, whose result slots are
/// `results` (rows sharing a RANGE frame get the first one's). `back` is a scratch slot.
fn plan_frames(frame: Frame, elems: &[(u32, i64)], first: usize, back: u32, results: &mut [u32], plan: &mut Vec<Op>) {
    plan.push(Op::Reset(back));
    // The queue is elems[lo..hi]; elems[lo..front_end] hold suffix aggregates up to front_end,
    // `back` aggregates elems[front_end..hi].
    let (mut lo, mut front_end, mut hi) = (0, 0, 0);
    let ties = matches!(frame, Frame::Range(_) | Frame::Running { ties: true });
    let mut k = first;
    while k < elems.len() {
        let t = elems[k].1;
        let last = if ties { k + elems[k + 1..].iter().take_while(|e| e.1 == t).count() } else { k };
        let start = match frame {
            Frame::Rows(n) => k.saturating_sub(n),
            Frame::Range(r) => {
                let from = t.saturating_sub(r);
                lo + elems[lo..k].iter().take_while(|e| e.1 < from).count()
            }
            Frame::Running { .. } => 0,
        };
        while hi <= last {
            plan.push(Op::Merge(back, elems[hi].0));
            hi += 1;
        }
        while lo < start {
            if lo == front_end {
                // The front is empty: turn the back into suffix aggregates.
                for e in (lo..hi - 1).rev() {
                    plan.push(Op::Merge(elems[e].0, elems[e + 1].0));
                }
                front_end = hi;
                plan.push(Op::Reset(back));
            }
            lo += 1;
        }
        let r = results[k - first];
        if lo < front_end {
            plan.push(Op::Merge(r, elems[lo].0));
        }
        plan.push(Op::Merge(r, back));
        for slot in &mut results[k + 1 - first..=last - first] {
            *slot = r;
        }
        k = last + 1;
    }
}
