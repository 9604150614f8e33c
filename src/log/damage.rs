//! log::damage: what a partition found wrong with its own files: offsets that recovery expected
//! and did not find (a segment missing from the chain, an active segment shorter than its index
//! says), and batches that fail their checks on a read or a scrub pass (`scrub`). Each finding is
//! logged once at error level when first recorded and kept (bounded) for `bramble status`
//! (DescribeConfigs `bramble.storage.damage`) and for tests.
//!
//! The node keeps serving a damaged partition, as Kafka does: what is gone cannot be served by
//! refusing the rest, and consumers of later offsets keep going. A read that meets a corrupt batch
//! answers CORRUPT_MESSAGE for that partition (never the damaged bytes); a gap is skipped the way
//! a compacted log's missing offsets are (a fetch inside it gets the next batch after it).

use std::collections::HashSet;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::Range;
use std::path::PathBuf;

/// Findings kept per partition; older ones beyond this are counted but not listed.
pub const DAMAGE_KEPT: usize = 16;
/// Findings remembered (as hashes, 8 bytes each) so one met again is not counted or logged
/// again; past this many, new ones are still counted and logged.
pub const DAMAGE_SEEN_MAX: usize = 1024;

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Damage {
    /// Offsets that should be on disk and are not.
    Gap { missing: Range<i64>, why: String },
    /// A batch in `file` at byte `position` that fails its length or CRC-32C check; `offsets` is
    /// what its header claims (empty when the header itself is unreadable).
    Corrupt {
        file: PathBuf,
        position: u64,
        offsets: Range<i64>,
        why: String,
    },
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Gap { missing, why } => write!(
                f,
                "offsets {}..{} missing ({why})",
                missing.start, missing.end
            ),
            Damage::Corrupt {
                file,
                position,
                offsets,
                why,
            } => {
                let name = file.file_name().map_or_else(
                    || file.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                write!(f, "corrupt batch in {name} at byte {position}")?;
                if !offsets.is_empty() {
                    write!(f, " (offsets {}..{})", offsets.start, offsets.end)?;
                }
                write!(f, ": {why}")
            }
        }
    }
}

/// A partition's findings: the first `DAMAGE_KEPT` and how many in all.
#[derive(Debug, Default, Clone)]
pub struct DamageLog {
    pub kept: Vec<Damage>,
    pub total: u64,
    seen: HashSet<u64>,
}

impl DamageLog {
    /// Records `d` unless it is already known (a consumer retrying at a corrupt batch meets the
    /// same one again and again); returns whether it was new, so the caller logs it once.
    pub fn record(&mut self, d: Damage) -> bool {
        let mut hasher = DefaultHasher::new();
        d.hash(&mut hasher);
        let key = hasher.finish();
        if self.seen.contains(&key) || self.kept.contains(&d) {
            return false;
        }
        // Full: start the set afresh rather than stop remembering, so a finding met again and
        // again is logged at most once per DAMAGE_SEEN_MAX distinct findings, never per fetch.
        // (`total` may then count one finding twice; it says how much was found, roughly.)
        if self.seen.len() >= DAMAGE_SEEN_MAX {
            self.seen.clear();
        }
        self.seen.insert(key);
        self.total += 1;
        if self.kept.len() < DAMAGE_KEPT {
            self.kept.push(d);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gap(start: i64) -> Damage {
        Damage::Gap {
            missing: start..start + 1,
            why: "test".to_string(),
        }
    }

    // Proves a finding first met after the set of known ones filled up is still reported once,
    // not again at every retry (a consumer retrying at a corrupt batch).
    #[test]
    fn a_full_set_still_reports_each_finding_once() {
        let mut log = DamageLog::default();
        for start in 0..DAMAGE_SEEN_MAX as i64 {
            assert!(log.record(gap(start * 10)));
        }
        let late = gap(-5);
        assert!(log.record(late.clone()), "a new finding is reported");
        assert!(
            !log.record(late.clone()),
            "a retry meets it again: not reported again"
        );
        assert!(!log.record(late), "nor a third time");
    }

    // Proves a finding met again (a consumer retrying at a corrupt batch) is neither counted nor
    // reported again, also once more than DAMAGE_KEPT are known, and the list stays bounded.
    #[test]
    fn findings_are_recorded_once_and_listed_bounded() {
        let mut log = DamageLog::default();
        let n = DAMAGE_KEPT as i64 + 4;
        for start in 0..n {
            assert!(log.record(gap(start)), "new finding {start}");
        }
        for start in 0..n {
            assert!(!log.record(gap(start)), "known finding {start}");
        }
        assert_eq!(log.total, n as u64);
        assert_eq!(log.kept.len(), DAMAGE_KEPT);
    }
}
