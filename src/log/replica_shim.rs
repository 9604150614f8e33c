//! TEMPORARY: stand-ins for the log layer's replication API while it is built on another branch.
//! Deleted at merge; nothing here is meant to be correct.
#![allow(dead_code, unused_variables)]

use bytes::Bytes;
use tokio::sync::watch;

use super::{LogError, Partition, ReadInfo, Staged};

impl Partition {
    pub fn durable_end(&self) -> i64 {
        self.high_watermark()
    }
    pub fn subscribe_durable(&self) -> watch::Receiver<i64> {
        self.subscribe()
    }
    pub fn set_high_watermark_cap(&self, cap: i64) {}
    pub async fn read_replica(&self, offset: i64, max_bytes: usize) -> Result<ReadInfo, LogError> {
        self.read(offset, max_bytes).await
    }
    pub async fn checkpoint_high_watermark(&self) -> Result<(), LogError> {
        Ok(())
    }
    pub async fn append_replica(&self, records: Bytes) -> Result<Staged, LogError> {
        self.append_staged(records, 0).await
    }
    pub async fn assign_epoch(&self, epoch: i32, start_offset: i64) {}
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        (-1, -1)
    }
    pub fn latest_epoch(&self) -> Option<i32> {
        None
    }
    pub async fn truncate_to(&self, offset: i64) -> Result<(), LogError> {
        Ok(())
    }
    pub async fn truncate_fully_and_start_at(&self, offset: i64) -> Result<(), LogError> {
        Ok(())
    }
    pub async fn raise_log_start_offset(&self, offset: i64) -> Result<(), LogError> {
        Ok(())
    }
}
