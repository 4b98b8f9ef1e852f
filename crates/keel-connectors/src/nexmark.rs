//! The Nexmark event generator as a source (`'connector' = 'nexmark'`): the online-auction
//! stream of people, auctions and bids used by the Nexmark benchmark, with the columns of Flink's
//! Nexmark DDL (`event_type`, and the `person`, `auction`, `bid` rows).
//!
//! Invariants: event `n` (a global event number) is a pure function of the seed and `n`: its kind
//! (`n mod 50`: 0 person, 1–3 auction, 4–49 bid), its ids and its values; so the stream is the same
//! whatever the parallelism. Events are spread over a fixed number of splits (event `n` belongs to
//! split `n mod splits`); a split's position is how many of its events were emitted, and splits
//! move whole between subtasks on a parallelism change. Event time advances by `1000 / rate` ms
//! per event; with an out-of-order group size `g > 1`, times are permuted inside each group of `g`
//! consecutive events.
//!
//! A query that reads only some kinds of event (the `bid` view's `WHERE event_type = 2`) can say
//! so in `event_types`; the generator then builds rows only for those kinds. The others still
//! consume their event numbers and advance the watermark, so the rows that are built, their
//! times and the watermarks are exactly those of the full stream after that filter.

use crate::error::ConnectorError;
use crate::splits::Splits;
use arrow::array::{
    Array, ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringBuilder, StructArray,
    TimestampMillisecondArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields, SchemaRef, TimeUnit};
use datafusion::physical_expr::PhysicalExpr;
use keel_runtime::{RestoredState, Result, RuntimeError, Source, SourcePoll, TaskContext, WatermarkStatus};
use keel_types::time::MIN_WATERMARK;
use std::sync::Arc;

const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
const TOTAL_PROPORTION: u64 = 50;
const FIRST_ID: i64 = 1000;
const HOT_RATIO: u64 = 100;
const ACTIVE_PEOPLE: u64 = 1000;
const IN_FLIGHT_AUCTIONS: u64 = 100;
const ID_LEAD: u64 = 10;
const STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const CITIES: [&str; 10] =
    ["Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle", "Kent", "Cheyenne"];
const FIRST_NAMES: [&str; 11] =
    ["Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"];
const LAST_NAMES: [&str; 9] = ["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"];
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const HOT_URLS: [&str; 4] = [
    "https://www.nexmark.com/googl/item.htm?query=1",
    "https://www.nexmark.com/faceb/item.htm?query=1",
    "https://www.nexmark.com/baidu/item.htm?query=1",
    "https://www.nexmark.com/apple/item.htm?query=1",
];

/// The generator's settings (`WITH` options of a nexmark table).
#[derive(Debug, Clone)]
pub struct NexmarkConfig {
    pub table: String,
    /// Total events; `None` generates forever.
    pub events: Option<u64>,
    /// Events per second of event time.
    pub rate: u64,
    pub splits: u32,
    pub out_of_order_group: u64,
    pub seed: u64,
    pub base_time_ms: i64,
    pub batch_size: usize,
    /// The table's stored columns (`event_type`, `person`, `auction`, `bid`).
    pub schema: SchemaRef,
    pub computed: Option<(Vec<Arc<dyn PhysicalExpr>>, SchemaRef)>,
    pub event_time: Option<(usize, i64)>,
    /// The event kinds (0 person, 1 auction, 2 bid) to build rows for; `None` builds all.
    pub event_types: Option<Vec<i32>>,
}

/// The kind of event `n`: 0 person, 1 auction, 2 bid.
fn kind_of(n: u64) -> i32 {
    let offset = n % TOTAL_PROPORTION;
    if offset < PERSON_PROPORTION {
        0
    } else if offset < PERSON_PROPORTION + AUCTION_PROPORTION {
        1
    } else {
        2
    }
}

/// SplitMix64's output function: a bijection of 64-bit words that scatters nearby inputs.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small deterministic random stream for one event (SplitMix64 from a start that depends on
/// the seed and the event number through `mix64`). The start must not be a linear function of
/// `n`: with `seed ^ n * GAMMA`, as before, event `n + 1`'s draws were event `n`'s shifted by
/// one, so consecutive bids often shared a price.
struct Rand(u64);
impl Rand {
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
    fn new(seed: u64, n: u64) -> Self {
        Rand(mix64(mix64(seed.wrapping_add(Self::GAMMA)) ^ n))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(Self::GAMMA);
        mix64(self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Log-uniform price in cents: about 10^(6u) * 100 (as e^(6u ln 10): `exp` is cheaper than
    /// `powf` and this runs for every bid).
    fn price(&mut self) -> i64 {
        ((self.unit() * 6.0 * std::f64::consts::LN_10).exp() * 100.0).round() as i64
    }
    /// `len` random lowercase letters: a slice at a random place of a fixed random text, so that
    /// padding hundreds of bytes costs one draw, not one per character.
    fn text(&mut self, len: usize) -> &'static str {
        let pool = letters();
        let len = len.min(pool.len());
        let at = self.below((pool.len() - len + 1) as u64) as usize;
        &pool[at..at + len]
    }
}

/// Appends `n` in decimal (without going through `fmt`, which this hot path felt).
fn push_number(out: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(d as char);
    }
}

/// 64 KiB of random lowercase letters, the same in every process (fixed seed).
fn letters() -> &'static str {
    static POOL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let mut r = Rand(0x006e_6578_6d61_726b);
        (0..65_536).map(|_| (b'a' + r.below(26) as u8) as char).collect()
    })
}

/// The 0-based id of the last person created at or before event `n`.
fn last_person(n: u64) -> u64 {
    let (epoch, offset) = (n / TOTAL_PROPORTION, n % TOTAL_PROPORTION);
    // Within an epoch, the person events come first.
    let within = if offset < PERSON_PROPORTION { offset } else { PERSON_PROPORTION - 1 };
    epoch * PERSON_PROPORTION + within
}

/// The 0-based id of the last auction created at or before event `n`.
fn last_auction(n: u64) -> u64 {
    let (epoch, offset) = (n / TOTAL_PROPORTION, n % TOTAL_PROPORTION);
    if offset < PERSON_PROPORTION {
        // Before this epoch's first auction: the previous epoch's last one.
        (epoch * AUCTION_PROPORTION).saturating_sub(1)
    } else {
        epoch * AUCTION_PROPORTION + (offset - PERSON_PROPORTION).min(AUCTION_PROPORTION - 1)
    }
}

/// A recent person (one of the last `ACTIVE_PEOPLE`, or a few about to be created).
fn recent_person(n: u64, r: &mut Rand) -> u64 {
    let people = last_person(n) + 1;
    let active = people.min(ACTIVE_PEOPLE);
    people - active + r.below(active + ID_LEAD)
}

/// A recent auction (one of the last `IN_FLIGHT_AUCTIONS`, or a few about to be created).
fn recent_auction(n: u64, r: &mut Rand) -> u64 {
    let max = last_auction(n);
    let min = max.saturating_sub(IN_FLIGHT_AUCTIONS);
    min + r.below(max - min + 1 + ID_LEAD)
}

/// Columns being built for one batch. Every child column of a kind being built gets a value for
/// every row (an empty one where the event is of another kind), so that the rows stay aligned;
/// the row's null buffer hides the filler. A kind not being built is one all-null column.
#[derive(Default)]
struct Columns {
    /// Which kinds (person, auction, bid) are left out of this batch.
    skip: [bool; 3],
    kind: Vec<i32>,
    p_id: Vec<i64>,
    p_name: StringBuilder,
    p_email: StringBuilder,
    p_card: StringBuilder,
    p_city: StringBuilder,
    p_state: StringBuilder,
    p_time: Vec<i64>,
    p_extra: StringBuilder,
    a_id: Vec<i64>,
    a_item: StringBuilder,
    a_desc: StringBuilder,
    a_initial: Vec<i64>,
    a_reserve: Vec<i64>,
    a_time: Vec<i64>,
    a_expires: Vec<i64>,
    a_seller: Vec<i64>,
    a_category: Vec<i64>,
    a_extra: StringBuilder,
    b_auction: Vec<i64>,
    b_bidder: Vec<i64>,
    b_price: Vec<i64>,
    b_channel: StringBuilder,
    b_url: StringBuilder,
    b_time: Vec<i64>,
    b_extra: StringBuilder,
    scratch: String,
}

impl Columns {
    /// Columns that leave out the kinds not in `event_types` (all kinds when `None`).
    fn for_kinds(event_types: Option<&[i32]>) -> Columns {
        let skip = |k: i32| event_types.is_some_and(|t| !t.contains(&k));
        Columns { skip: [skip(0), skip(1), skip(2)], ..Columns::default() }
    }

    /// Appends event `n`, of kind `kind`, at event time `ts` (one slot in each of the kinds' rows
    /// built; all but one are null).
    fn push(&mut self, seed: u64, n: u64, kind: i32, ts: i64) {
        use std::fmt::Write;
        let mut r = Rand::new(seed, n);
        self.kind.push(kind);
        let (mut pt, mut at, mut bt) = (0, 0, 0);
        match kind {
            0 => {
                let mut size = 16;
                self.scratch.clear();
                let _ =
                    write!(self.scratch, "{} {}", FIRST_NAMES[r.below(11) as usize], LAST_NAMES[r.below(9) as usize]);
                size += self.scratch.len();
                self.p_name.append_value(&self.scratch);
                self.scratch.clear();
                let _ = write!(self.scratch, "{}@{}.com", r.text(7), r.text(5));
                size += self.scratch.len();
                self.p_email.append_value(&self.scratch);
                self.scratch.clear();
                let _ = write!(
                    self.scratch,
                    "{:04} {:04} {:04} {:04}",
                    r.below(10_000),
                    r.below(10_000),
                    r.below(10_000),
                    r.below(10_000)
                );
                size += self.scratch.len();
                self.p_card.append_value(&self.scratch);
                let city = CITIES[r.below(10) as usize];
                let state = STATES[r.below(6) as usize];
                self.p_city.append_value(city);
                self.p_state.append_value(state);
                size += city.len() + state.len();
                self.p_extra.append_value(r.text(200usize.saturating_sub(size)));
                self.p_id.push(FIRST_ID + last_person(n) as i64);
                pt = ts;
            }
            1 => {
                let seller =
                    if r.below(4) > 0 { last_person(n) / HOT_RATIO * HOT_RATIO } else { recent_person(n, &mut r) };
                let initial = r.price();
                self.a_item.append_value(r.text(20));
                self.a_desc.append_value(r.text(100));
                self.a_extra.append_value(r.text(500 - 8 - 20 - 100 - 8 * 6));
                self.a_id.push(FIRST_ID + last_auction(n) as i64);
                self.a_initial.push(initial);
                self.a_reserve.push(initial + r.price());
                self.a_expires.push(ts + 1_000 + r.below(20_000) as i64);
                self.a_seller.push(FIRST_ID + seller as i64);
                self.a_category.push(10 + r.below(5) as i64);
                at = ts;
            }
            _ => {
                let auction =
                    if r.below(2) > 0 { last_auction(n) / HOT_RATIO * HOT_RATIO } else { recent_auction(n, &mut r) };
                let bidder =
                    if r.below(4) > 0 { last_person(n) / HOT_RATIO * HOT_RATIO + 1 } else { recent_person(n, &mut r) };
                let mut size = 8 * 4;
                if r.below(2) > 0 {
                    let i = r.below(4) as usize;
                    self.b_channel.append_value(HOT_CHANNELS[i]);
                    self.b_url.append_value(HOT_URLS[i]);
                    size += HOT_CHANNELS[i].len() + HOT_URLS[i].len();
                } else {
                    let id = r.below(10_000);
                    self.scratch.clear();
                    self.scratch.push_str("channel-");
                    push_number(&mut self.scratch, id);
                    size += self.scratch.len();
                    self.b_channel.append_value(&self.scratch);
                    // https://www.nexmark.com/{a}/{b}/{c}/item.htm?query=1&channel_id={id}
                    self.scratch.clear();
                    self.scratch.push_str("https://www.nexmark.com/");
                    for _ in 0..3 {
                        self.scratch.push_str(r.text(5));
                        self.scratch.push('/');
                    }
                    self.scratch.push_str("item.htm?query=1&channel_id=");
                    push_number(&mut self.scratch, id);
                    size += self.scratch.len();
                    self.b_url.append_value(&self.scratch);
                }
                self.b_extra.append_value(r.text(100usize.saturating_sub(size)));
                self.b_auction.push(FIRST_ID + auction as i64);
                self.b_bidder.push(FIRST_ID + bidder as i64);
                self.b_price.push(r.price());
                bt = ts;
            }
        }
        if kind != 0 && !self.skip[0] {
            self.p_id.push(0);
            for b in [
                &mut self.p_name,
                &mut self.p_email,
                &mut self.p_card,
                &mut self.p_city,
                &mut self.p_state,
                &mut self.p_extra,
            ] {
                b.append_value("");
            }
        }
        if kind != 1 && !self.skip[1] {
            for v in [
                &mut self.a_id,
                &mut self.a_initial,
                &mut self.a_reserve,
                &mut self.a_expires,
                &mut self.a_seller,
                &mut self.a_category,
            ] {
                v.push(0);
            }
            for b in [&mut self.a_item, &mut self.a_desc, &mut self.a_extra] {
                b.append_value("");
            }
        }
        if kind != 2 && !self.skip[2] {
            for v in [&mut self.b_auction, &mut self.b_bidder, &mut self.b_price] {
                v.push(0);
            }
            for b in [&mut self.b_channel, &mut self.b_url, &mut self.b_extra] {
                b.append_value("");
            }
        }
        self.p_time.push(pt);
        self.a_time.push(at);
        self.b_time.push(bt);
    }
}

fn s(b: &mut StringBuilder) -> ArrayRef {
    Arc::new(b.finish())
}
fn i(v: Vec<i64>) -> ArrayRef {
    Arc::new(Int64Array::from(v))
}
fn t(v: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(v))
}

/// Builds a struct column of `declared` type from named children; the row is null where
/// `valid` is false, and so is each of its fields (SQL reads `person.id` of a bid as NULL, as
/// Flink and Keel's filesystem source do, not as the 0 or "" the generator leaves there).
/// Declared fields are matched to children by name, ignoring case.
fn row(
    declared: &DataType,
    children: Vec<(&str, ArrayRef)>,
    valid: NullBuffer,
    column: &str,
) -> std::result::Result<ArrayRef, String> {
    let DataType::Struct(fields) = declared else {
        return Err(format!("column {column} must be a ROW<...>, as in the Nexmark DDL"));
    };
    let absent = BooleanArray::from(valid.iter().map(|v| !v).collect::<Vec<_>>());
    let mut arrays = vec![];
    for f in fields.iter() {
        let (_, a) = children.iter().find(|(n, _)| n.eq_ignore_ascii_case(f.name())).ok_or_else(|| {
            format!(
                "column {column} has a field {} the Nexmark generator does not produce; it produces {}",
                f.name(),
                children.iter().map(|c| c.0).collect::<Vec<_>>().join(", ")
            )
        })?;
        let a = if a.data_type() == f.data_type() {
            a.clone()
        } else {
            arrow::compute::cast(a, f.data_type()).map_err(|e| e.to_string())?
        };
        arrays.push(arrow::compute::nullif(&a, &absent).map_err(|e| e.to_string())?);
    }
    let fields: Fields =
        fields.iter().map(|f| Arc::new(f.as_ref().clone().with_nullable(true))).collect::<Vec<_>>().into();
    StructArray::try_new(fields, arrays, Some(valid)).map(|a| Arc::new(a) as ArrayRef).map_err(|e| e.to_string())
}

impl Columns {
    fn finish(mut self, schema: &SchemaRef) -> std::result::Result<RecordBatch, String> {
        let valid = |k: i32| NullBuffer::from(self.kind.iter().map(|&x| x == k).collect::<Vec<_>>());
        let (pv, av, bv) = (valid(0), valid(1), valid(2));
        let rows = self.kind.len();
        let kind: ArrayRef = Arc::new(Int32Array::from(std::mem::take(&mut self.kind)));
        let mut cols = vec![];
        for f in schema.fields() {
            let name = f.name().to_ascii_lowercase();
            let skipped = match name.as_str() {
                "person" => self.skip[0],
                "auction" => self.skip[1],
                "bid" => self.skip[2],
                _ => false,
            };
            if skipped {
                cols.push(arrow::array::new_null_array(f.data_type(), rows));
                continue;
            }
            let col = match name.as_str() {
                "event_type" => arrow::compute::cast(&kind, f.data_type()).map_err(|e| e.to_string())?,
                "person" => row(
                    f.data_type(),
                    vec![
                        ("id", i(std::mem::take(&mut self.p_id))),
                        ("name", s(&mut self.p_name)),
                        ("emailAddress", s(&mut self.p_email)),
                        ("creditCard", s(&mut self.p_card)),
                        ("city", s(&mut self.p_city)),
                        ("state", s(&mut self.p_state)),
                        ("dateTime", t(std::mem::take(&mut self.p_time))),
                        ("extra", s(&mut self.p_extra)),
                    ],
                    pv.clone(),
                    f.name(),
                )?,
                "auction" => row(
                    f.data_type(),
                    vec![
                        ("id", i(std::mem::take(&mut self.a_id))),
                        ("itemName", s(&mut self.a_item)),
                        ("description", s(&mut self.a_desc)),
                        ("initialBid", i(std::mem::take(&mut self.a_initial))),
                        ("reserve", i(std::mem::take(&mut self.a_reserve))),
                        ("dateTime", t(std::mem::take(&mut self.a_time))),
                        ("expires", t(std::mem::take(&mut self.a_expires))),
                        ("seller", i(std::mem::take(&mut self.a_seller))),
                        ("category", i(std::mem::take(&mut self.a_category))),
                        ("extra", s(&mut self.a_extra)),
                    ],
                    av.clone(),
                    f.name(),
                )?,
                "bid" => row(
                    f.data_type(),
                    vec![
                        ("auction", i(std::mem::take(&mut self.b_auction))),
                        ("bidder", i(std::mem::take(&mut self.b_bidder))),
                        ("price", i(std::mem::take(&mut self.b_price))),
                        ("channel", s(&mut self.b_channel)),
                        ("url", s(&mut self.b_url)),
                        ("dateTime", t(std::mem::take(&mut self.b_time))),
                        ("extra", s(&mut self.b_extra)),
                    ],
                    bv.clone(),
                    f.name(),
                )?,
                other => {
                    return Err(format!(
                        "the Nexmark generator has no column {other}; declare event_type, person, auction and bid"
                    ));
                }
            };
            cols.push(col);
        }
        RecordBatch::try_new(schema.clone(), cols).map_err(|e| e.to_string())
    }
}

/// The Nexmark source (see the module docs).
pub struct NexmarkSource {
    cfg: NexmarkConfig,
    splits: Option<Splits>,
    cursor: usize,
    /// The out-of-order permutation's step: the smallest number above 1 coprime with the group.
    step: u64,
}

impl NexmarkSource {
    pub fn new(cfg: NexmarkConfig) -> Self {
        let g = cfg.out_of_order_group.max(1);
        let step = (2..).find(|k| gcd(*k, g) == 1).unwrap_or(1);
        NexmarkSource { cfg, splits: None, cursor: 0, step }
    }

    /// The event time of event `n`.
    fn time_of(&self, n: u64) -> i64 {
        let g = self.cfg.out_of_order_group.max(1);
        // A fixed permutation inside the group: i -> (i * step + 1) mod g, with the step coprime
        // with g, is one-to-one and never the identity (a multiplication alone is, for g = 2).
        let slot = if g == 1 {
            n
        } else {
            let group = n / g * g;
            group + ((n - group) * self.step + 1) % g
        };
        let rate = self.cfg.rate.max(1);
        let offset = match slot.checked_mul(1000) {
            Some(ms) => ms / rate,
            None => (u128::from(slot) * 1000 / u128::from(rate)) as u64,
        };
        self.cfg.base_time_ms + offset as i64
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Source for NexmarkSource {
    fn open(&mut self, ctx: &TaskContext, restored: RestoredState) -> Result<()> {
        self.splits = Some(Splits::restore(&self.cfg.table, self.cfg.splits, self.cfg.events, ctx, &restored)?);
        Ok(())
    }

    fn poll(&mut self) -> Result<SourcePoll> {
        let mut splits =
            self.splits.take().ok_or_else(|| RuntimeError::Internal("nexmark source used before open".into()))?;
        let result = self.poll_splits(&mut splits);
        self.splits = Some(splits);
        result
    }

    fn watermark(&self) -> WatermarkStatus {
        self.splits.as_ref().map_or(WatermarkStatus::Idle(MIN_WATERMARK), |s| s.watermark(self.cfg.event_time))
    }

    fn snapshot(&mut self, _checkpoint: u64) -> Result<Vec<u8>> {
        self.splits.as_ref().map_or(Ok(Vec::new()), Splits::snapshot)
    }
}

impl NexmarkSource {
    fn poll_splits(&mut self, splits: &mut Splits) -> Result<SourcePoll> {
        let n = splits.len();
        for _ in 0..n {
            let idx = self.cursor;
            self.cursor = (self.cursor + 1) % n;
            if splits.finished(idx) {
                continue;
            }
            let mut cols = Columns::for_kinds(self.cfg.event_types.as_deref());
            let (mut rows, mut events) = (0, 0);
            // Events of kinds left out are consumed without a row; a poll stops after a bounded
            // number of them so that barriers and watermarks still pass often.
            let max_events = self.cfg.batch_size.saturating_mul(TOTAL_PROPORTION as usize);
            while rows < self.cfg.batch_size && events < max_events && !splits.finished(idx) {
                let event = splits.next_number(idx);
                let ts = self.time_of(event);
                let kind = kind_of(event);
                if !cols.skip[kind as usize] {
                    cols.push(self.cfg.seed, event, kind, ts);
                    rows += 1;
                }
                splits.advance(idx, 1, ts);
                events += 1;
            }
            let base = cols
                .finish(&self.cfg.schema)
                .map_err(|e| RuntimeError::User(format!("table {}: {e}", self.cfg.table)))?;
            let batch = match &self.cfg.computed {
                None => base,
                Some((exprs, schema)) => {
                    let rows = base.num_rows();
                    let cols = exprs
                        .iter()
                        .map(|e| e.evaluate(&base).and_then(|v| v.into_array(rows)))
                        .collect::<datafusion::error::Result<Vec<_>>>()
                        .map_err(RuntimeError::expr(format!("computed columns of table {}", self.cfg.table)))?;
                    RecordBatch::try_new(schema.clone(), cols).map_err(RuntimeError::arrow("computed columns"))?
                }
            };
            return Ok(SourcePoll::Batch(batch));
        }
        if self.cfg.events.is_some() {
            return Ok(SourcePoll::Exhausted);
        }
        Ok(SourcePoll::Pending)
    }
}

/// Checks a nexmark table's stored columns against what the generator produces, before running.
pub fn check_schema(schema: &SchemaRef) -> std::result::Result<(), ConnectorError> {
    let mut cols = Columns::default();
    cols.push(0, 0, 0, 0);
    cols.finish(schema).map(|_| ()).map_err(ConnectorError::Config)
}

/// The stored columns of Flink's Nexmark table, for tests and tools.
pub fn flink_schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, None);
    let st = |f: Vec<(&str, DataType)>| {
        DataType::Struct(f.into_iter().map(|(n, t)| Field::new(n, t, true)).collect::<Vec<_>>().into())
    };
    Arc::new(arrow::datatypes::Schema::new(vec![
        Field::new("event_type", DataType::Int32, true),
        Field::new(
            "person",
            st(vec![
                ("id", DataType::Int64),
                ("name", DataType::Utf8),
                ("emailAddress", DataType::Utf8),
                ("creditCard", DataType::Utf8),
                ("city", DataType::Utf8),
                ("state", DataType::Utf8),
                ("dateTime", ts()),
                ("extra", DataType::Utf8),
            ]),
            true,
        ),
        Field::new(
            "auction",
            st(vec![
                ("id", DataType::Int64),
                ("itemName", DataType::Utf8),
                ("description", DataType::Utf8),
                ("initialBid", DataType::Int64),
                ("reserve", DataType::Int64),
                ("dateTime", ts()),
                ("expires", ts()),
                ("seller", DataType::Int64),
                ("category", DataType::Int64),
                ("extra", DataType::Utf8),
            ]),
            true,
        ),
        Field::new(
            "bid",
            st(vec![
                ("auction", DataType::Int64),
                ("bidder", DataType::Int64),
                ("price", DataType::Int64),
                ("channel", DataType::Utf8),
                ("url", DataType::Utf8),
                ("dateTime", ts()),
                ("extra", DataType::Utf8),
            ]),
            true,
        ),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;

    #[test]
    fn ids_and_proportions_follow_the_event_number() {
        assert_eq!((last_person(0), last_person(49), last_person(50)), (0, 0, 1));
        assert_eq!(
            (last_auction(1), last_auction(3), last_auction(4), last_auction(50), last_auction(51)),
            (0, 2, 2, 2, 3)
        );
        let mut cols = Columns::default();
        for n in 0..5000 {
            cols.push(7, n, kind_of(n), n as i64);
        }
        let b = cols.finish(&flink_schema()).unwrap();
        let kinds = b.column(0).as_primitive::<arrow::datatypes::Int32Type>();
        let count = |k| kinds.iter().filter(|x| *x == Some(k)).count();
        assert_eq!((count(0), count(1), count(2)), (100, 300, 4600));
        let bids = b.column(3).as_struct();
        assert!(bids.is_null(0) && bids.is_valid(4));
        // The fields of an absent row are NULL too, not the generator's zeros.
        let persons = b.column(1).as_struct();
        assert!(persons.is_valid(0) && persons.column(0).is_valid(0));
        assert!((0..persons.num_columns()).all(|c| persons.column(c).is_null(4) && bids.column(c.min(6)).is_null(0)));
        let prices = bids.column(2).as_primitive::<arrow::datatypes::Int64Type>();
        assert!((4..5000).filter(|n| n % 50 >= 4).all(|n| prices.value(n) >= 100 && prices.value(n) <= 100_000_000));
    }

    #[test]
    fn leaving_kinds_out_keeps_the_rows_of_the_others() {
        let build = |kinds: Option<&[i32]>| {
            let mut cols = Columns::for_kinds(kinds);
            for n in 0..3000 {
                let kind = kind_of(n);
                if !cols.skip[kind as usize] {
                    cols.push(11, n, kind, n as i64 * 3);
                }
            }
            cols.finish(&flink_schema()).unwrap()
        };
        let all = build(None);
        for kinds in [&[2][..], &[0, 1][..], &[1][..]] {
            let some = build(Some(kinds));
            let keep = arrow::array::BooleanArray::from(
                all.column(0)
                    .as_primitive::<arrow::datatypes::Int32Type>()
                    .iter()
                    .map(|k| Some(kinds.contains(&k.unwrap())))
                    .collect::<Vec<_>>(),
            );
            let expected = arrow::compute::filter_record_batch(&all, &keep).unwrap();
            assert_eq!(some.num_rows(), expected.num_rows(), "kinds {kinds:?}");
            for (i, name) in ["event_type", "person", "auction", "bid"].into_iter().enumerate() {
                if i == 0 || kinds.contains(&(i as i32 - 1)) {
                    assert_eq!(some.column(i).as_ref(), expected.column(i).as_ref(), "kinds {kinds:?}, column {name}");
                } else {
                    assert_eq!(some.column(i).null_count(), some.num_rows(), "kinds {kinds:?}, column {name}");
                }
            }
        }
    }

    #[test]
    fn out_of_order_groups_permute_times_within_each_group() {
        let source = |group: u64| {
            NexmarkSource::new(NexmarkConfig {
                table: "t".into(),
                events: Some(1000),
                rate: 1000,
                splits: 1,
                out_of_order_group: group,
                seed: 1,
                base_time_ms: 0,
                batch_size: 100,
                schema: flink_schema(),
                computed: None,
                event_time: None,
                event_types: None,
            })
        };
        let in_order = source(1);
        assert!((0..1000).all(|n| in_order.time_of(n) == n as i64), "group 1: event n at n ms");
        for group in [2, 4, 10, 12] {
            let s = source(group);
            let times: Vec<i64> = (0..1000).map(|n| s.time_of(n)).collect();
            let mut moved = 0;
            for (g, chunk) in times.chunks_exact(group as usize).enumerate() {
                // Each group holds exactly its own in-order times, in another order.
                let mut sorted = chunk.to_vec();
                sorted.sort_unstable();
                let own: Vec<i64> = (0..chunk.len() as i64).map(|k| g as i64 * group as i64 + k).collect();
                assert_eq!(sorted, own, "group size {group}, group {g}");
                moved += chunk.windows(2).filter(|w| w[0] > w[1]).count();
            }
            assert!(moved > 0, "group size {group}: some events are out of order");
        }
    }

    #[test]
    fn the_same_seed_and_number_give_the_same_event() {
        let one = |n| {
            let mut c = Columns::default();
            c.push(3, n, kind_of(n), 0);
            c.finish(&flink_schema()).unwrap()
        };
        assert_eq!(one(1234), one(1234));
        assert_ne!(one(1234), one(1284));
    }

    #[test]
    fn consecutive_events_draw_independently() {
        for seed in [0, 1, 42] {
            // No event's draws are its neighbour's shifted by one (the old seeding's flaw).
            let draws = |n| {
                let mut r = Rand::new(seed, n);
                (0..8).map(|_| r.next()).collect::<Vec<_>>()
            };
            for n in 0..2000 {
                let (a, b) = (draws(n), draws(n + 1));
                assert!(a[1..].iter().all(|x| !b.contains(x)), "seed {seed}: events {n} and {} share draws", n + 1);
            }
            // Consecutive bids share a price about as often as two independent log-uniform
            // prices in cents do (well under 1%), not the 30% the correlated draws gave.
            let mut cols = Columns::default();
            for n in 0..20_000 {
                cols.push(seed, n, kind_of(n), n as i64);
            }
            let b = cols.finish(&flink_schema()).unwrap();
            let bids = b.column(3).as_struct();
            let prices = bids.column(2).as_primitive::<arrow::datatypes::Int64Type>();
            let bid_rows: Vec<usize> = (0..20_000).filter(|&n| bids.is_valid(n)).collect();
            let same =
                bid_rows.windows(2).filter(|w| w[1] == w[0] + 1 && prices.value(w[0]) == prices.value(w[1])).count();
            assert!(
                same * 100 < bid_rows.len(),
                "seed {seed}: {same} of {} consecutive bids share a price",
                bid_rows.len()
            );
        }
    }
}
