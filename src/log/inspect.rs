//! log::inspect: the node-wide memory budget for looking inside stored batches to answer
//! ListOffsets by timestamp and max-timestamp (`decompress_bytes_max`). Each batch looked into
//! takes its own bytes plus, when compressed, the most its records may decompress to; the budget
//! is taken without waiting (the lookup runs on a blocking thread that must not park), and a batch
//! that finds it used up is answered from its header at batch granularity, the documented safe
//! side. So however many clients ask at once, this work holds at most `decompress_bytes_max`.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::protocol::batch::BatchHeader;
use crate::protocol::timestamps::{self, RECORDS_DECOMPRESSED_BYTES_MAX};

/// Shared by every partition's lookups; cheap to clone.
#[derive(Clone)]
pub struct InspectBudget {
    bytes: Arc<Semaphore>,
    bytes_max: usize,
    /// Most one batch's records may decompress to: half the budget (the batch itself needs room
    /// too), and never above [`RECORDS_DECOMPRESSED_BYTES_MAX`].
    records_bytes_max: usize,
}

/// What one look inside a batch may use, held until the look is done.
pub struct Inspecting {
    _permit: OwnedSemaphorePermit,
    /// The decompression cap for this batch.
    pub records_bytes_max: usize,
}

impl InspectBudget {
    pub fn new(bytes_max: usize) -> InspectBudget {
        InspectBudget {
            bytes: Arc::new(Semaphore::new(bytes_max)),
            bytes_max,
            records_bytes_max: (bytes_max / 2).min(RECORDS_DECOMPRESSED_BYTES_MAX),
        }
    }

    /// Budget to read (and decompress) the batch behind `header`, or `None` when the header
    /// answers alone or the budget cannot cover it now.
    pub fn try_take(&self, header: &BatchHeader) -> Option<Inspecting> {
        let records = timestamps::records_needed(header, self.records_bytes_max)?;
        let need = header.total_bytes().saturating_add(records);
        if need > self.bytes_max {
            return None;
        }
        let permit = self
            .bytes
            .clone()
            .try_acquire_many_owned(u32::try_from(need).ok()?)
            .ok()?;
        Some(Inspecting {
            _permit: permit,
            records_bytes_max: self.records_bytes_max,
        })
    }

    /// Bytes not in use (tests, diagnostics).
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::test_batches::{batch, gzip_batch};

    // Proves the budget bounds concurrent looks: while one compressed batch holds it, no second
    // one may decompress (it is answered from its header), and the bytes return when done.
    #[test]
    fn budget_bounds_concurrent_decompression() {
        let gz = BatchHeader::parse(&gzip_batch(&[1, 2, 3])).unwrap();
        let budget = InspectBudget::new(2 * 1024 * 1024 + 4 * gz.total_bytes());
        let first = budget.try_take(&gz).expect("the first look fits");
        assert_eq!(first.records_bytes_max, budget.records_bytes_max);
        assert!(
            budget.try_take(&gz).is_none(),
            "a second decompression ran beside the first: {} bytes left",
            budget.available()
        );
        let plain = BatchHeader::parse(&batch(3, 1, 10)).unwrap();
        let small = budget
            .try_take(&plain)
            .expect("an uncompressed batch needs only its bytes");
        drop((first, small));
        assert_eq!(budget.available(), budget.bytes_max);
        assert!(budget.try_take(&gz).is_some());
    }

    // Proves a batch larger than the whole budget is never looked into.
    #[test]
    fn batch_over_the_budget_is_answered_from_its_header() {
        let plain = BatchHeader::parse(&batch(3, 1, 10)).unwrap();
        let budget = InspectBudget::new(plain.total_bytes() - 1);
        assert!(budget.try_take(&plain).is_none());
    }
}
