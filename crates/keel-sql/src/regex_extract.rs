//! The search behind `REGEXP_EXTRACT(s, pattern, group)`: each pattern compiled once per thread
//! (not once per batch), and, for a one-pass pattern whose matches start with known literals, one
//! pass per row instead of the regex crate's three.
//!
//! For a capture group the regex crate runs a forward DFA to find where the match ends, a reverse
//! DFA to find where it starts, and then its one-pass DFA over the match to place the groups; in
//! q21's profile the first two were 14% of the time and the one-pass DFA 11%. Here the pattern's
//! prefix prefilter finds where a match could start, and the one-pass DFA, anchored there, both
//! confirms the match and places its groups.
//!
//! Invariants:
//! - The answer is always the regex crate's (`regex::Regex::captures`). Every match starts with
//!   one of the prefilter's literals (a prefix set is complete for the pattern), and the
//!   prefilter reports the leftmost candidate, so the first candidate where the anchored search
//!   matches is the leftmost match's start; from a fixed start the anchored one-pass search gives
//!   the leftmost-first match, the regex crate's. Look-around (`^`, `\b`) sees the whole text.
//! - A row costs linear time: after `MAX_TRIES` candidates that do not match, the row is handed to
//!   the regex crate from the last candidate (no match starts before it).
//! - A pattern that is not one-pass, or has no literal prefixes, always uses the regex crate.

use regex_automata::dfa::onepass;
use regex_automata::util::prefilter::Prefilter;
use regex_automata::util::primitives::NonMaxUsize;
use regex_automata::{Anchored, Input, MatchKind, Span};
use std::cell::RefCell;

/// Candidates tried in one row before the row goes to the regex crate.
const MAX_TRIES: usize = 4;

/// Compiled patterns kept per thread; the oldest is dropped beyond this.
const CACHED_PATTERNS: usize = 16;

/// The one-pass path of one pattern.
struct OnePass {
    dfa: onepass::DFA,
    cache: onepass::Cache,
    prefilter: Prefilter,
    slots: Vec<Option<NonMaxUsize>>,
}

/// One compiled pattern with its reusable search state.
pub(crate) struct Extractor {
    pattern: String,
    regex: regex::Regex,
    locations: regex::CaptureLocations,
    one_pass: Option<OnePass>,
    /// Rows handed to the regex crate after `MAX_TRIES` candidates (for tests).
    handed_over: u64,
}

impl Extractor {
    pub fn new(pattern: &str) -> Result<Self, regex::Error> {
        let regex = regex::Regex::new(pattern)?;
        let locations = regex.capture_locations();
        Ok(Extractor { pattern: pattern.to_string(), regex, locations, one_pass: one_pass(pattern), handed_over: 0 })
    }

    /// Whether rows take the one-pass path.
    #[cfg(test)]
    fn is_one_pass(&self) -> bool {
        self.one_pass.is_some()
    }

    /// Group `group` of the leftmost-first match of the pattern in `text`, if both exist.
    pub fn extract<'t>(&mut self, text: &'t str, group: usize) -> Option<&'t str> {
        let Some(fast) = &mut self.one_pass else { return self.slow(text, 0, group) };
        let (hay, end) = (text.as_bytes(), text.len());
        let mut from = 0;
        for _ in 0..MAX_TRIES {
            let start = fast.prefilter.find(hay, Span { start: from, end })?.start;
            let input = Input::new(hay).span(start..end).anchored(Anchored::Yes);
            match fast.dfa.try_search_slots(&mut fast.cache, &input, &mut fast.slots) {
                Ok(Some(_)) => {
                    let at = group.checked_mul(2)?;
                    let (a, b) = (fast.slots.get(at)?.as_ref()?, fast.slots.get(at + 1)?.as_ref()?);
                    return text.get(a.get()..b.get());
                }
                Ok(None) => from = start + 1,
                // An anchored one-pass search does not fail; should it, the regex crate answers.
                Err(_) => return self.slow(text, start, group),
            }
            if from > end {
                return self.slow(text, start, group);
            }
        }
        self.handed_over += 1;
        // `from - 1` is the last candidate: a literal's start, so a character boundary.
        self.slow(text, from - 1, group)
    }

    /// The regex crate's answer, searching from `from` (a character boundary).
    fn slow<'t>(&mut self, text: &'t str, from: usize, group: usize) -> Option<&'t str> {
        self.regex.captures_read_at(&mut self.locations, text, from)?;
        self.locations.get(group).and_then(|(a, b)| text.get(a..b))
    }
}

/// The one-pass path of `pattern`, if it is one-pass and its matches start with literals.
fn one_pass(pattern: &str) -> Option<OnePass> {
    let hir = regex_automata::util::syntax::parse(pattern).ok()?;
    let prefilter = Prefilter::from_hir_prefix(MatchKind::LeftmostFirst, &hir)?;
    let dfa = onepass::DFA::new(pattern).ok()?;
    let cache = dfa.create_cache();
    let slots = vec![None; dfa.get_nfa().group_info().slot_len()];
    Some(OnePass { dfa, cache, prefilter, slots })
}

thread_local! {
    static EXTRACTORS: RefCell<Vec<Extractor>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's compiled patterns: `get(pattern)` gives the extractor of a
/// pattern, compiling it on first use.
pub(crate) fn with_extractors<R>(f: impl FnOnce(&mut Extractors) -> R) -> R {
    EXTRACTORS.with_borrow_mut(|list| f(&mut Extractors { list }))
}

/// This thread's compiled patterns (see `with_extractors`).
pub(crate) struct Extractors<'a> {
    list: &'a mut Vec<Extractor>,
}

impl Extractors<'_> {
    /// The index of `pattern`'s extractor, compiled if new.
    pub fn index_of(&mut self, pattern: &str) -> Result<usize, regex::Error> {
        if let Some(i) = self.list.iter().position(|e| e.pattern == pattern) {
            return Ok(i);
        }
        let e = Extractor::new(pattern)?;
        if self.list.len() >= CACHED_PATTERNS {
            self.list.remove(0);
        }
        self.list.push(e);
        Ok(self.list.len() - 1)
    }

    pub fn get(&mut self, i: usize) -> &mut Extractor {
        &mut self.list[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_types::test_rng::Lcg;

    /// The regex crate's answer.
    fn reference<'t>(re: &regex::Regex, text: &'t str, group: usize) -> Option<&'t str> {
        re.captures(text).and_then(|c| c.get(group)).map(|m| m.as_str())
    }

    const PIECES: &[&str] = &[
        "a",
        "b",
        "c",
        "d",
        "&",
        "=",
        "x",
        "y",
        "z",
        "é",
        " ",
        "0",
        "7",
        "42",
        "-",
        "channel_id=",
        "foo",
        "bar",
        "is",
        "?query=1",
        "https://www.nexmark.com/",
        "aaaa",
        "ab",
        "bcd",
    ];

    fn text(rng: &mut Lcg) -> String {
        let n = rng.below(12) as usize;
        (0..n).map(|_| PIECES[rng.below(PIECES.len() as u64) as usize]).collect()
    }

    #[test]
    fn every_row_gets_the_regex_crates_answer() {
        let mut rng = Lcg::seeded("regex_extract");
        let patterns = [
            (r"(&|^)channel_id=([^&]*)", true),
            (r"a(b*)c", true),
            (r"(\d+)-(\d+)", true),
            (r"^(foo)|(bar)$", true),
            (r"\b(is)\b", true),
            (r"(x)?y", true),
            (r"(é+)(.)", true),
            (r"(a|ab)(c|bcd)(d*)", false),
            (r"(a*)(a*)b", false),
            (r"(.*)foo", false),
            (r"(a)\w*z", true),
            (r"(?i)(FOO)(bar)?", true),
        ];
        let mut one_pass = 0;
        for (pattern, _) in patterns {
            let re = regex::Regex::new(pattern).unwrap();
            let mut e = Extractor::new(pattern).unwrap();
            one_pass += usize::from(e.is_one_pass());
            for _ in 0..3000 {
                let t = text(&mut rng);
                for group in 0..5 {
                    assert_eq!(
                        e.extract(&t, group),
                        reference(&re, &t, group),
                        "pattern {pattern:?}, text {t:?}, group {group} (seed {})",
                        rng.seed()
                    );
                }
            }
        }
        // The one-pass path must really be taken, or this test compares the regex crate with itself.
        assert!(one_pass >= 6, "only {one_pass} patterns took the one-pass path");
        assert!(Extractor::new(r"(&|^)channel_id=([^&]*)").unwrap().is_one_pass(), "q21's pattern is one-pass");
    }

    #[test]
    fn many_failing_candidates_hand_the_row_over() {
        // Every "ab" is a candidate, and none matches until the last one.
        let mut e = Extractor::new(r"(a)b*z").unwrap();
        assert!(e.is_one_pass());
        let text = "abababababababababz";
        assert_eq!(e.extract(text, 0), Some("abz"));
        assert_eq!(e.extract(text, 1), Some("a"));
        assert!(e.handed_over >= 2, "the rows were handed over ({})", e.handed_over);
        assert_eq!(e.extract("ab", 0), None);
        assert_eq!(e.extract("az", 5), None, "a group past the pattern's groups");
        assert_eq!(e.extract("az", usize::MAX), None, "a group far past the pattern's groups");
    }

    #[test]
    fn compiled_patterns_are_kept_and_bounded() {
        with_extractors(|x| {
            let a = x.index_of("(a)").unwrap();
            assert_eq!(x.index_of("(a)").unwrap(), a, "compiled once");
            assert!(x.index_of("(").is_err(), "an invalid pattern is an error");
            for i in 0..2 * CACHED_PATTERNS {
                let i = x.index_of(&format!("({i})")).unwrap();
                assert!(i < CACHED_PATTERNS);
            }
            assert_eq!(x.list.len(), CACHED_PATTERNS);
            let i = x.index_of("x(y)").unwrap();
            assert_eq!(x.get(i).extract("axyz", 1), Some("y"));
        });
    }
}
