//! bramble: a Kafka-compatible event broker for small ARM boards.
//!
//! A produce request reads as a straight line through these modules:
//!
//! ```text
//! server::listener ─► server::connection (frames: i32 length + body, capped)
//!      ─► protocol::codec (header + body decode, no I/O) ─► api::<name> (one file per Kafka API)
//!      ─► broker (topics, partitions, configs) ─► log::Partition (segments, index)
//!      ─► io::DiskWriter (one thread per data dir, group commit) ─► disk
//! ```
//!
//! - [`config`]: node settings from TOML and flags, with named limits.
//! - [`board`]: board profiles (Pi Zero 2 W … x86-64): settings layered under the config file,
//!   detection from the device tree, and the memory model every profile must fit.
//! - [`protocol`]: framing, request/response codecs, the v2 record batch header. No I/O.
//! - [`server`]: TCP listener, per-connection tasks, shutdown.
//! - [`api`]: Kafka API handlers, one file per API key, each decode → handle → encode.
//! - [`broker`]: the node's view of topics and partitions (the control plane's local state).
//! - [`group`]: the consumer group coordinator; its state lives in `__consumer_offsets`.
//! - [`replica`]: leader/follower replication between brokers: ISR, high watermark, fetchers.
//! - [`log`]: per-partition append-only segment files (the data plane).
//! - [`io`]: the one door to the disk for writes.
//! - [`client`]: a small Kafka client used by the CLI (and later replication).
//! - [`node`]: one node composed from the parts above (what `bramble serve` runs).
//! - [`bench`]: `bramble bench produce|consume|disk`, built on [`client`].

pub mod api;
pub mod bench;
pub mod board;
pub mod broker;
pub mod client;
pub mod config;
pub mod group;
pub mod io;
pub mod log;
pub mod meta;
pub mod node;
pub mod protocol;
pub mod replica;
pub mod server;
