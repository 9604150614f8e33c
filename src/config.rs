//! config: the node's settings. Defaults make `bramble serve` work with no file and no flags; a
//! TOML file sets the same keys; command-line flags override the file. Unknown keys are an error
//! that names the key. Every limit is here, named with its unit last, and checked together at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::log::LogConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// Kafka's `message.timestamp.type` values, spelled as Kafka spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
pub enum MessageTimestampType {
    /// Records keep the timestamp the producer set.
    #[default]
    CreateTime,
    /// The broker stamps each batch with its clock at append (`protocol::records`).
    LogAppendTime,
}

impl MessageTimestampType {
    /// Parses a topic config value (Kafka's names, exact case).
    pub fn parse(value: &str) -> Option<MessageTimestampType> {
        match value.trim() {
            "CreateTime" => Some(MessageTimestampType::CreateTime),
            "LogAppendTime" => Some(MessageTimestampType::LogAppendTime),
            _ => None,
        }
    }

    /// Kafka's name for the value (what DescribeConfigs reports).
    pub fn as_str(self) -> &'static str {
        match self {
            MessageTimestampType::CreateTime => "CreateTime",
            MessageTimestampType::LogAppendTime => "LogAppendTime",
        }
    }
}

/// Smallest `decompress_bytes_max`: below this, every compressed batch would be answered at
/// batch granularity.
pub const DECOMPRESS_BYTES_MIN: usize = 64 * 1024;

/// Node settings. Field names are the TOML keys.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This node's broker id, unique in the cluster. Unset: the id in `node.toml`, or 1 on a first
    /// start. Only an explicit id pins the data directory to that id; a directory first started
    /// without one (as a freshly installed package does) takes the first id it is given later.
    pub node_id: Option<i32>,
    /// Address the Kafka listener binds to.
    pub listen: String,
    /// host:port clients are told to connect to (Metadata). Defaults to the bound listen address.
    pub advertise: Option<String>,
    /// Where logs and metadata live.
    pub data_dir: PathBuf,
    /// Rack (Kafka's broker.rack): placement puts a partition's replicas on distinct racks.
    pub rack: Option<String>,
    /// Address the metadata quorum's peer transport binds to (`--raft-listen`), and that the
    /// other nodes reach this one at. Unset: a one-voter cluster with no peers (`bramble serve`
    /// alone).
    pub raft_listen: Option<String>,
    /// The quorum's voters, `id@host:port,…` (Kafka's controller.quorum.voters). Unset with
    /// `raft_listen` set: this node alone.
    pub voters: Option<String>,
    /// A voter's raft address to join as a learner (a broker-only node holding full metadata).
    pub join: Option<String>,
    /// host:port the other nodes reach this node's quorum transport at (what a `join` node
    /// announces). Defaults to `raft_listen`, which must then be a concrete address.
    pub raft_advertise: Option<String>,
    /// Local IP this node's connections to its peers (Raft, controller requests, replica
    /// fetches) leave from. Unset: the kernel picks by route. For a multi-homed board whose peers
    /// allow one of its addresses, and the cluster simulation (which tells nodes apart by it).
    pub peer_source_ip: Option<std::net::IpAddr>,
    /// The Raft leader's heartbeat interval.
    pub raft_heartbeat_ms: u64,
    /// A follower that hears no leader for a random time in this range starts an election. SD
    /// cards stall for hundreds of ms under write bursts, so keep it well above the heartbeat.
    pub raft_election_timeout_min_ms: u64,
    pub raft_election_timeout_max_ms: u64,
    /// One Raft or controller RPC to a peer, after which it counts as failed.
    pub raft_rpc_timeout_ms: u64,
    /// Metadata log entries between snapshots (each snapshot lets the log before it be purged).
    pub raft_snapshot_entries: u64,
    /// How often a broker tells the controller it is alive (Kafka's broker.heartbeat.interval.ms).
    pub broker_heartbeat_ms: u64,
    /// A broker the controller has not heard from for this long is fenced: it leads nothing and
    /// leaves Metadata (Kafka's broker.session.timeout.ms).
    pub broker_session_timeout_ms: u64,
    /// Longest an admin request (CreateTopics, …) waits for the controller to commit it; then it
    /// fails with a retriable error (the request's own timeout applies when shorter).
    pub controller_request_ms_max: u64,
    /// A follower that has not caught up with its leader's log end for this long leaves the ISR
    /// (Kafka's replica.lag.time.max.ms); it rejoins once it has caught up again.
    pub replica_lag_ms_max: u64,
    /// Longest a follower's fetch waits at the leader for new records (replica.fetch.wait.max.ms).
    pub replica_fetch_wait_ms_max: u64,
    /// Bytes a follower asks for per partition in one fetch (replica.fetch.max.bytes).
    pub replica_fetch_bytes_max: usize,
    /// Bytes a follower asks for in one fetch across its partitions
    /// (replica.fetch.response.max.bytes): one such answer per leader it follows is in memory.
    pub replica_fetch_response_bytes_max: usize,
    /// Pause before a follower retries a leader that failed or refused its fetch
    /// (replica.fetch.backoff.ms).
    pub replica_fetch_backoff_ms: u64,
    /// Memory for answering followers' fetches on this node (apart from consumers'
    /// `fetch_inflight_bytes_max`, so consumers cannot starve replication or the reverse).
    pub replica_fetch_inflight_bytes_max: usize,
    /// Node default of `min.insync.replicas`: an acks=all produce needs this many replicas in the
    /// ISR, else NOT_ENOUGH_REPLICAS.
    pub min_insync_replicas: i32,
    /// How often each partition's high watermark is checkpointed to disk
    /// (replica.high.watermark.checkpoint.interval.ms).
    pub hw_checkpoint_ms: u64,
    /// With no live in-sync replica left, let the controller elect any live replica (Kafka's
    /// unclean.leader.election.enable): availability over records acknowledged only by the lost
    /// ISR. The topic config, then the cluster-default dynamic broker config, override it; the
    /// controller's own setting is what applies.
    pub unclean_leader_election_enable: bool,
    /// The controller moves leadership back to each partition's preferred replica (its first)
    /// once it is in sync again (Kafka's auto.leader.rebalance.enable).
    pub auto_leader_rebalance_enable: bool,
    /// How often the controller looks for partitions led by another than their in-sync preferred
    /// replica (Kafka's leader.imbalance.check.interval.seconds).
    pub leader_imbalance_check_interval_ms: u64,
    /// Longest a stopping node (SIGTERM) waits for the controller to move its leaderships away
    /// before it shuts down anyway (Kafka's controlled shutdown, bounded).
    pub controlled_shutdown_ms_max: u64,
    /// Create a topic on first Produce/Metadata naming it (Kafka's auto.create.topics.enable).
    pub auto_create_topics: bool,
    /// Partition count of auto-created topics and of CreateTopics asking for the default (-1).
    pub num_partitions: i32,
    /// Partitions this node hosts across all topics (each holds open files and index memory).
    pub partitions_max: usize,
    /// Replication factor used when a client asks for the default (-1).
    pub default_replication_factor: i16,
    /// Largest request frame accepted; a longer length prefix closes the connection.
    pub frame_bytes_max: usize,
    /// Concurrent client connections; further connects wait in the listen backlog.
    pub connections_max: usize,
    /// Request bytes held across all connections at once (Kafka's queued.max.request.bytes); a
    /// connection whose next frame does not fit waits before reading it.
    pub inflight_bytes_max: usize,
    /// A connection idle this long between requests is closed (Kafka's connections.max.idle.ms).
    pub connection_idle_ms_max: u64,
    /// Connections from one peer address at once (Kafka's max.connections.per.ip); a connection
    /// over it (or over `connections_max`) is accepted and closed at once.
    pub connections_per_ip_max: usize,
    /// A new connection that sends no request for this long is closed (clients send ApiVersions
    /// at once); far shorter than `connection_idle_ms_max`, so silent sockets free their slot.
    pub connection_first_request_ms_max: u64,
    /// Request bytes one connection may hold (its frames being read, queued or answered); taken
    /// as at least `frame_bytes_max`.
    pub inflight_bytes_per_connection_max: usize,
    /// Request bytes the connections of one peer address may hold together, so one host cannot
    /// take the whole budget; taken as at most `inflight_bytes_max`.
    pub inflight_bytes_per_ip_max: usize,
    /// Memory for reading and decompressing stored batches to answer ListOffsets by timestamp
    /// (and max timestamp), node-wide. One batch decompresses to at most half of it (and 16 MiB);
    /// a batch that expands further, or finds the budget in use, is answered from its header
    /// (batch granularity, never late) rather than waiting.
    pub decompress_bytes_max: usize,
    /// Requests one connection may have dispatched but not yet answered (pipelining, like a
    /// client's max.in.flight). Requests still run in order; only waiting for the disk overlaps,
    /// so a single producer's pipelined requests share fsyncs.
    pub connection_requests_in_flight_max: usize,
    /// Once a frame's length has arrived, its body must arrive within this time.
    pub request_read_ms_max: u64,
    /// A client that takes no bytes of an answer for this long is disconnected: one that stops
    /// reading would otherwise keep its answers' memory (fetch budget, in-flight request bytes)
    /// for as long as it stays connected. Slow readers that make progress are never cut off.
    pub response_stall_ms_max: u64,
    /// Upper bound on one Fetch response, whatever the client asks for.
    pub fetch_bytes_max: usize,
    /// Longest long-poll a Fetch may ask for.
    pub fetch_wait_ms_max: u64,
    /// Memory for Fetch answers across all connections: each read round reserves twice its
    /// byte cap (the batches read, then the encoded answer) and the answer keeps its own size
    /// until written, so many consumers cannot together hold more than this. A long poll that is
    /// waiting holds none.
    pub fetch_inflight_bytes_max: usize,
    /// Topic defaults (Kafka names: segment.bytes, segment.ms, retention.ms, retention.bytes, max.message.bytes).
    pub segment_bytes: u64,
    pub segment_ms: u64,
    /// -1 keeps data forever.
    pub retention_ms: i64,
    /// -1 is no size limit.
    pub retention_bytes: i64,
    pub message_bytes_max: u32,
    pub index_interval_bytes: u32,
    /// fsync before answering acks=1/all (group commit keeps it cheap).
    pub fsync_on_ack: bool,
    /// Topic default for `message.timestamp.type` (Kafka's log.message.timestamp.type):
    /// "CreateTime" keeps the producer's timestamps; "LogAppendTime" stamps each batch with the
    /// broker's clock when it is appended.
    pub message_timestamp_type: MessageTimestampType,
    /// Group commit window: after the first write that needs an fsync, the disk writer waits this
    /// long for more produce requests to share it. 0 suits SSDs; SD cards want a few ms, because
    /// one fsync there costs milliseconds and small writes wear the card.
    pub flush_ms: u64,
    /// Bytes of writes gathered into one group commit (one bigger batch still goes alone).
    pub flush_bytes: usize,
    /// Write jobs queued for the disk writer before produce requests wait (backpressure).
    pub writer_queue_depth_max: usize,
    /// With fsync_on_ack = false: how often every log is synced anyway (bounds loss at a power cut).
    pub flush_ms_max: u64,
    /// Async worker threads; 0 means one per CPU core.
    pub worker_threads: usize,
    /// Threads for blocking file work (reads, decompression); tokio's default of 512 is far more
    /// than a small board's memory should allow.
    pub blocking_threads_max: usize,
    /// How often retention runs.
    pub retention_check_ms: u64,
    /// How often the cleaner passes over topics with cleanup.policy=compact (Kafka's
    /// log.cleaner.backoff.ms).
    pub compaction_check_ms: u64,
    /// Pause between two passes of the background scrubber, which verifies the CRC-32C of every
    /// batch in sealed segments and reports damage (log, `bramble status`); 0 disables it. The
    /// first pass starts one interval after start.
    pub scrub_interval_ms: u64,
    /// Read rate of a scrub pass (bytes per second), so it leaves the disk to produce and fetch.
    pub scrub_bytes_per_sec_max: u64,
    /// How long shutdown waits for in-flight requests before closing connections.
    pub shutdown_grace_ms: u64,
    /// Disk writer backend: "auto" (io_uring if the start-up probe passes, else std with one log
    /// line naming why), "uring" (refuse to start without it) or "std". Once the writer runs,
    /// `serve` records the backend in use here, so DescribeConfigs reports uring or std.
    pub io_backend: crate::io::Backend,
    /// Consumer groups this node coordinates (each holds members and committed offsets in memory).
    pub groups_max: usize,
    /// Members of one group, pending member ids included (Kafka's group.max.size).
    pub members_per_group_max: usize,
    /// Partitions of `__consumer_offsets` when it is created (Kafka's offsets.topic.num.partitions).
    pub offsets_topic_num_partitions: i32,
    /// Session timeouts a member may ask for (Kafka's group.min/max.session.timeout.ms).
    pub group_min_session_timeout_ms: u64,
    pub group_max_session_timeout_ms: u64,
    /// How long the first rebalance of an empty group waits for more members
    /// (Kafka's group.initial.rebalance.delay.ms).
    pub group_initial_rebalance_delay_ms: u64,
    /// The board profile and medium the node runs as ("pi4/sd"), set by `serve` from
    /// `--board` or the file's `board` key (see `board`); shown in DescribeConfigs.
    #[serde(skip)]
    pub board: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        let log = LogConfig::default();
        Config {
            node_id: None,
            listen: "127.0.0.1:9092".to_string(),
            advertise: None,
            data_dir: PathBuf::from("bramble-data"),
            rack: None,
            raft_listen: None,
            voters: None,
            join: None,
            raft_advertise: None,
            peer_source_ip: None,
            raft_heartbeat_ms: 500,
            raft_election_timeout_min_ms: 1_500,
            raft_election_timeout_max_ms: 3_000,
            raft_rpc_timeout_ms: 2_000,
            raft_snapshot_entries: 1_000,
            broker_heartbeat_ms: 1_000,
            broker_session_timeout_ms: 9_000,
            controller_request_ms_max: 10_000,
            replica_lag_ms_max: 30_000,
            replica_fetch_wait_ms_max: 500,
            replica_fetch_bytes_max: 1024 * 1024,
            replica_fetch_response_bytes_max: 10 * 1024 * 1024,
            replica_fetch_backoff_ms: 1_000,
            replica_fetch_inflight_bytes_max: 32 * 1024 * 1024,
            min_insync_replicas: 1,
            hw_checkpoint_ms: 5_000,
            unclean_leader_election_enable: false,
            auto_leader_rebalance_enable: true,
            // Kafka checks every 300 s to spare large clusters the churn; a Pi cluster has a few
            // thousand partitions at most, the check is a scan of the in-memory image and one
            // metadata entry when something moves, and a returning node should take its share
            // of the load back within a rolling restart, not minutes after it.
            leader_imbalance_check_interval_ms: 30_000,
            controlled_shutdown_ms_max: 30_000,
            auto_create_topics: true,
            num_partitions: 1,
            partitions_max: 2_000,
            default_replication_factor: 1,
            frame_bytes_max: 16 * 1024 * 1024,
            connections_max: 512,
            inflight_bytes_max: 64 * 1024 * 1024,
            connection_idle_ms_max: 600_000,
            connections_per_ip_max: 256,
            connection_first_request_ms_max: 10_000,
            inflight_bytes_per_connection_max: 16 * 1024 * 1024,
            inflight_bytes_per_ip_max: 32 * 1024 * 1024,
            decompress_bytes_max: 32 * 1024 * 1024,
            connection_requests_in_flight_max: 5,
            request_read_ms_max: 30_000,
            response_stall_ms_max: 30_000,
            fetch_bytes_max: 16 * 1024 * 1024,
            fetch_wait_ms_max: 30_000,
            fetch_inflight_bytes_max: 64 * 1024 * 1024,
            segment_bytes: log.segment_bytes_max,
            segment_ms: log.segment_ms_max,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            message_bytes_max: log.message_bytes_max,
            index_interval_bytes: log.index_interval_bytes,
            fsync_on_ack: true,
            message_timestamp_type: MessageTimestampType::CreateTime,
            flush_ms: 0,
            flush_bytes: 4 * 1024 * 1024,
            writer_queue_depth_max: 1024,
            flush_ms_max: 1_000,
            worker_threads: 0,
            blocking_threads_max: 64,
            retention_check_ms: 60_000,
            compaction_check_ms: 15_000,
            scrub_interval_ms: 24 * 3600 * 1000,
            scrub_bytes_per_sec_max: 8 * 1024 * 1024,
            shutdown_grace_ms: 5_000,
            io_backend: crate::io::Backend::Auto,
            groups_max: 10_000,
            members_per_group_max: 1_000,
            offsets_topic_num_partitions: 10,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            board: None,
        }
    }
}

impl Config {
    /// Reads a TOML file; keys not set keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })
    }

    /// Checks every limit together, so a bad file fails at start and not at the first request.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        if self.node_id.is_some_and(|id| id < 0) {
            return invalid("node_id", "must be >= 0");
        }
        if self.listen.parse::<SocketAddr>().is_err() {
            return invalid("listen", "must be an IP:port such as 127.0.0.1:9092");
        }
        if let Some(adv) = &self.advertise
            && split_host_port(adv).is_none()
        {
            return invalid("advertise", "must be host:port");
        }
        if let Err((key, reason)) = crate::replica::settings::check(self) {
            return invalid(key, &reason);
        }
        if let Err(reason) = crate::meta::settings::check(self) {
            return Err(ConfigError::Invalid {
                key: reason.0,
                reason: reason.1,
            });
        }
        if self.partitions_max == 0 || self.partitions_max > i32::MAX as usize {
            return invalid("partitions_max", "must be 1..=2147483647");
        }
        if self.num_partitions < 1 || self.num_partitions as usize > self.partitions_max {
            return invalid("num_partitions", "must be 1..=partitions_max");
        }
        if self.groups_max == 0 || self.members_per_group_max == 0 {
            return invalid(
                "groups_max",
                "groups_max and members_per_group_max must be >= 1",
            );
        }
        if self.offsets_topic_num_partitions < 1
            || self.offsets_topic_num_partitions as usize > self.partitions_max
        {
            return invalid("offsets_topic_num_partitions", "must be 1..=partitions_max");
        }
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms {
            return invalid(
                "group_min_session_timeout_ms",
                "must not exceed group_max_session_timeout_ms",
            );
        }
        if self.default_replication_factor < 1 {
            return invalid("default_replication_factor", "must be >= 1");
        }
        if self.frame_bytes_max < 1024 || self.frame_bytes_max > i32::MAX as usize {
            return invalid("frame_bytes_max", "must be 1024..=2147483647");
        }
        if (self.message_bytes_max as usize) > self.frame_bytes_max {
            return invalid("message_bytes_max", "must not exceed frame_bytes_max");
        }
        if self.inflight_bytes_max < self.frame_bytes_max
            || self.inflight_bytes_max > u32::MAX as usize
        {
            return invalid(
                "inflight_bytes_max",
                "must be at least frame_bytes_max and at most 4294967295",
            );
        }
        if !(1..=64).contains(&self.connection_requests_in_flight_max) {
            return invalid("connection_requests_in_flight_max", "must be 1..=64");
        }
        for (key, ms) in [
            ("connection_idle_ms_max", self.connection_idle_ms_max),
            ("request_read_ms_max", self.request_read_ms_max),
            ("response_stall_ms_max", self.response_stall_ms_max),
        ] {
            if ms == 0 {
                return invalid(key, "must be >= 1 ms");
            }
        }
        if self.connections_max == 0 {
            return invalid("connections_max", "must be >= 1");
        }
        if self.segment_bytes < crate::broker::topic::SEGMENT_BYTES_MIN {
            return invalid("segment_bytes", "must be >= 1048576");
        }
        if self.segment_bytes > u32::MAX as u64 {
            return invalid("segment_bytes", "must fit the index's u32 file positions");
        }
        if self.fetch_bytes_max == 0 || self.fetch_bytes_max > i32::MAX as usize {
            return invalid("fetch_bytes_max", "must be 1..=2147483647");
        }
        // The budgets are semaphores: tokio's limit is smaller than u32 on 32-bit targets.
        let budget_max = (u32::MAX as usize).min(tokio::sync::Semaphore::MAX_PERMITS);
        if self.inflight_bytes_max > budget_max {
            return invalid(
                "inflight_bytes_max",
                &format!("must be at most {budget_max}"),
            );
        }
        // A Fetch round may bring one batch as large as a whole frame (KIP-74), twice over
        // (read, then encoded): the budget must hold that, or such a round would wait forever.
        let fetch_round_bytes = 2 * self.fetch_bytes_max.max(self.frame_bytes_max);
        if self.fetch_inflight_bytes_max < fetch_round_bytes
            || self.fetch_inflight_bytes_max > budget_max
        {
            return invalid(
                "fetch_inflight_bytes_max",
                &format!(
                    "must be at least 2 x max(fetch_bytes_max, frame_bytes_max) and at most {budget_max}"
                ),
            );
        }
        if self.flush_ms > 1_000 {
            return invalid(
                "flush_ms",
                "a group commit window over 1000 ms would stall every ack",
            );
        }
        if self.flush_bytes < 4096 || self.writer_queue_depth_max == 0 {
            return invalid(
                "flush_bytes",
                "flush_bytes must be >= 4096 and writer_queue_depth_max >= 1",
            );
        }
        if self.flush_ms_max == 0 {
            return invalid("flush_ms_max", "must be >= 1");
        }
        if self.blocking_threads_max == 0 {
            return invalid("blocking_threads_max", "must be >= 1");
        }
        if self.retention_check_ms == 0 {
            return invalid("retention_check_ms", "must be >= 1");
        }
        if self.io_backend == crate::io::Backend::Uring && !crate::io::URING_BUILT {
            return invalid("io_backend", "uring is built for 64-bit Linux only");
        }
        if self.compaction_check_ms == 0 {
            return invalid("compaction_check_ms", "must be >= 1");
        }
        if self.scrub_interval_ms > 0 && self.scrub_bytes_per_sec_max == 0 {
            return invalid(
                "scrub_bytes_per_sec_max",
                "must be >= 1 while scrub_interval_ms enables the scrubber",
            );
        }
        self.validate_client_limits()
    }

    /// Request bytes one peer address may hold: `inflight_bytes_per_ip_max`, at most the node's
    /// `inflight_bytes_max` and at least one whole frame.
    pub fn ip_request_bytes_max(&self) -> usize {
        self.inflight_bytes_per_ip_max
            .min(self.inflight_bytes_max)
            .max(self.frame_bytes_max)
    }

    /// Request bytes one connection may hold: `inflight_bytes_per_connection_max`, at least one
    /// whole frame (or no frame of that size could ever be read) and at most its address's share.
    pub fn connection_request_bytes_max(&self) -> usize {
        self.inflight_bytes_per_connection_max
            .max(self.frame_bytes_max)
            .min(self.ip_request_bytes_max())
    }

    /// The limits that keep one client (or one address) from taking what every client needs.
    fn validate_client_limits(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        if self.connections_per_ip_max == 0 {
            return invalid("connections_per_ip_max", "must be >= 1");
        }
        if self.connection_first_request_ms_max == 0 {
            return invalid("connection_first_request_ms_max", "must be >= 1 ms");
        }
        let budget_max = tokio::sync::Semaphore::MAX_PERMITS.min(u32::MAX as usize);
        if self.decompress_bytes_max < DECOMPRESS_BYTES_MIN
            || self.decompress_bytes_max > budget_max
        {
            return invalid(
                "decompress_bytes_max",
                &format!("must be {DECOMPRESS_BYTES_MIN}..={budget_max}"),
            );
        }
        Ok(())
    }

    /// The disk writer's limits and group commit policy.
    pub fn writer_config(&self) -> crate::io::WriterConfig {
        crate::io::WriterConfig {
            data_dir: self.data_dir.clone(),
            queue_depth_max: self.writer_queue_depth_max,
            group_bytes_max: self.flush_bytes,
            group_wait_us: self.flush_ms.saturating_mul(1000),
            ..crate::io::WriterConfig::default()
        }
    }

    /// The log settings a new topic starts from.
    pub fn log_defaults(&self) -> LogConfig {
        LogConfig {
            segment_bytes_max: self.segment_bytes,
            segment_ms_max: self.segment_ms,
            retention_bytes_max: u64::try_from(self.retention_bytes).ok(),
            retention_ms_max: u64::try_from(self.retention_ms).ok(),
            index_interval_bytes: self.index_interval_bytes,
            message_bytes_max: self.message_bytes_max,
            fsync_on_ack: self.fsync_on_ack,
        }
    }
}

/// Splits "host:port" (IPv6 as "[::1]:9092").
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves an unknown key is refused with its name in the message.
    #[test]
    fn unknown_key_is_named() {
        let err = toml::from_str::<Config>("node_id = 3\nbogus_key = 1\n").unwrap_err();
        assert!(err.message().contains("bogus_key"), "{}", err.message());
    }

    // Proves a partial file keeps defaults for the rest and defaults validate.
    #[test]
    fn partial_file_keeps_defaults() {
        let c: Config = toml::from_str("num_partitions = 3\nauto_create_topics = false\n").unwrap();
        assert_eq!(c.num_partitions, 3);
        assert!(!c.auto_create_topics);
        assert_eq!(c.listen, Config::default().listen);
        c.validate().unwrap();
    }

    // Proves limits are checked together at start.
    #[test]
    fn bad_limits_fail_validation() {
        let c = Config {
            frame_bytes_max: 10,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            listen: "nope".into(),
            ..Config::default()
        };
        assert!(c.validate().is_err());
        assert_eq!(split_host_port("[::1]:9092"), Some(("::1".into(), 9092)));
    }

    // Proves the per-connection and per-address request budgets are clamped so a whole frame
    // always fits one connection and one address never gets more than the node's budget.
    #[test]
    fn request_budget_shares_are_clamped() {
        let c = Config {
            frame_bytes_max: 2048,
            inflight_bytes_max: 8192,
            inflight_bytes_per_ip_max: 1 << 30,
            inflight_bytes_per_connection_max: 1,
            message_bytes_max: 1024,
            fetch_inflight_bytes_max: 64 * 1024 * 1024,
            ..Config::default()
        };
        c.validate().unwrap();
        assert_eq!(c.ip_request_bytes_max(), 8192);
        assert_eq!(c.connection_request_bytes_max(), 2048);
        let d = Config::default();
        assert_eq!(d.ip_request_bytes_max(), d.inflight_bytes_per_ip_max);
        assert_eq!(
            d.connection_request_bytes_max(),
            d.inflight_bytes_per_connection_max
        );
    }
}
