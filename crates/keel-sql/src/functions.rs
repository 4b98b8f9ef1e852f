//! Aggregate functions with Flink's result types, registered over DataFusion's built-ins of the
//! same name: `SUM` and `AVG` keep their argument's type (AVG of integers truncates toward
//! zero), where DataFusion widens SUM(INT) to BIGINT and makes AVG a DOUBLE. The streaming
//! operators compute these themselves; the DataFusion accumulators here give the same answers
//! when a query runs as a batch (used to check streaming results).

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Signature, TypeSignature, Volatility};
use std::sync::Arc;

/// SUM or AVG with Flink's typing.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FlinkSumAvg {
    avg: bool,
    signature: Signature,
}

fn numeric_types() -> Vec<DataType> {
    use DataType::*;
    vec![Int8, Int16, Int32, Int64, UInt8, UInt16, UInt32, UInt64, Float32, Float64]
}

impl FlinkSumAvg {
    fn new(avg: bool) -> Self {
        let mut sigs: Vec<TypeSignature> = numeric_types().into_iter().map(|t| TypeSignature::Exact(vec![t])).collect();
        sigs.push(TypeSignature::Numeric(1));
        FlinkSumAvg { avg, signature: Signature::one_of(sigs, Volatility::Immutable) }
    }
}

/// The UDAFs to register in a session.
pub fn flink_aggregates() -> Vec<AggregateUDF> {
    vec![AggregateUDF::from(FlinkSumAvg::new(false)), AggregateUDF::from(FlinkSumAvg::new(true))]
}

impl AggregateUDFImpl for FlinkSumAvg {
    fn name(&self) -> &str {
        if self.avg { "avg" } else { "sum" }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args.first() {
            Some(DataType::Decimal128(p, s)) if !self.avg => Ok(DataType::Decimal128(38.max(*p), *s)),
            Some(t) => Ok(t.clone()),
            None => datafusion::common::plan_err!("{} takes one argument", self.name()),
        }
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(format!("{}[int]", args.name), DataType::Int64, true)),
            Arc::new(Field::new(format!("{}[float]", args.name), DataType::Float64, true)),
            Arc::new(Field::new(format!("{}[count]", args.name), DataType::Int64, true)),
        ])
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SumAvgAcc {
            avg: self.avg,
            out: args.return_field.data_type().clone(),
            int: 0,
            float: 0.0,
            count: 0,
        }))
    }
}

#[derive(Debug)]
struct SumAvgAcc {
    avg: bool,
    out: DataType,
    int: i64,
    float: f64,
    count: i64,
}

impl SumAvgAcc {
    fn is_float(&self) -> bool {
        matches!(self.out, DataType::Float16 | DataType::Float32 | DataType::Float64)
    }
}

impl SumAvgAcc {
    /// Adds (`sign` 1) or takes back (`sign` -1) the non-NULL values.
    fn apply(&mut self, values: &[ArrayRef], sign: i64) -> Result<()> {
        let Some(v) = values.first() else { return Ok(()) };
        if self.is_float() {
            let a = arrow::compute::cast(v, &DataType::Float64)?;
            let a = a.as_primitive::<Float64Type>();
            for x in a.iter().flatten() {
                self.float += sign as f64 * x;
                self.count += sign;
            }
        } else {
            let a = arrow::compute::cast(v, &DataType::Int64)?;
            let a = a.as_primitive::<Int64Type>();
            for x in a.iter().flatten() {
                self.int = self.int.wrapping_add(sign.wrapping_mul(x));
                self.count += sign;
            }
        }
        Ok(())
    }
}

impl Accumulator for SumAvgAcc {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.apply(values, 1)
    }
    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.apply(values, -1)
    }
    fn supports_retract_batch(&self) -> bool {
        true
    }
    fn evaluate(&mut self) -> Result<ScalarValue> {
        let v = if self.count == 0 {
            ScalarValue::Int64(None)
        } else if self.is_float() {
            ScalarValue::Float64(Some(if self.avg { self.float / self.count as f64 } else { self.float }))
        } else {
            ScalarValue::Int64(Some(if self.avg { self.int / self.count } else { self.int }))
        };
        if self.is_float() && self.count == 0 {
            return ScalarValue::try_from(&self.out);
        }
        v.cast_to(&self.out)
    }
    fn size(&self) -> usize {
        std::mem::size_of::<Self>()
    }
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::Int64(Some(self.int)),
            ScalarValue::Float64(Some(self.float)),
            ScalarValue::Int64(Some(self.count)),
        ])
    }
    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (Some(i), Some(f), Some(c)) = (states.first(), states.get(1), states.get(2)) else { return Ok(()) };
        for k in 0..i.len() {
            self.int = self.int.wrapping_add(i.as_primitive::<Int64Type>().value(k));
            self.float += f.as_primitive::<Float64Type>().value(k);
            self.count += c.as_primitive::<Int64Type>().value(k);
        }
        Ok(())
    }
}
