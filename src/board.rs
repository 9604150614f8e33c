//! board: board profiles — what a Raspberry Pi (or a generic x86-64 box) can give a node. The
//! profiles live in `boards/*.toml` and are built into the binary, so `bramble serve --board
//! pi4` works wherever the binary is copied; `--board FILE.toml` reads one from disk, and
//! `--board auto` picks one from `/proc/device-tree/model` (otherwise, logged, [`FALLBACK`]).
//!
//! Settings are layered, later layers winning: built-in defaults < the profile's `[settings]` <
//! its `[media.<medium>]` table (flush policy for sd, usb-ssd or nvme) < the `--config` file <
//! command-line flags. After layering, the node's memory budgets are added up with
//! [`memory_model`] and must fit the profile's `memory_max_bytes` (the service's MemoryMax),
//! which in turn must leave a quarter of the board's RAM to the OS and the page cache. A budget
//! that does not fit is an error naming the setting that takes the most.
//!
//! Profile file layout:
//!
//! ```toml
//! [board]
//! name = "pi4"                      # what --board takes
//! description = "…"
//! models = ["Raspberry Pi 4"]       # prefixes of /proc/device-tree/model
//! memory_bytes = 2147483648         # RAM of the smallest variant the profile is for
//! memory_max_bytes = 805306368      # what bramble may use (systemd MemoryMax)
//! medium = "sd"                     # default medium
//! [settings]                        # any node setting (README, Settings)
//! [media.sd]                        # settings for one medium, usually the flush policy
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::config::Config;

/// The profiles shipped in `boards/`, built in.
pub const BUILT_IN: &[(&str, &str)] = &[
    ("pi-zero-2w", include_str!("../boards/pi-zero-2w.toml")),
    ("pi3", include_str!("../boards/pi3.toml")),
    ("pi4", include_str!("../boards/pi4.toml")),
    ("pi5", include_str!("../boards/pi5.toml")),
    ("cm4", include_str!("../boards/cm4.toml")),
    (
        "generic-x86-64",
        include_str!("../boards/generic-x86-64.toml"),
    ),
];

/// The profile `--board auto` falls back to when the model is unknown or unreadable: on ARM the
/// smallest profile (an unknown ARM board — a Pi 2, a Zero W, a CM3 — may be small), elsewhere
/// the generic x86-64 one.
pub const FALLBACK: &str = if cfg!(any(target_arch = "arm", target_arch = "aarch64")) {
    "pi-zero-2w"
} else {
    "generic-x86-64"
};

/// Where the kernel names the board (device-tree platforms: every Raspberry Pi).
pub const MODEL_PATH: &str = "/proc/device-tree/model";
/// Tests point `--board auto` at a file of their own with this variable.
pub const MODEL_PATH_ENV: &str = "BRAMBLE_DEVICE_TREE_MODEL";

/// Share of the board's RAM a profile may give bramble; the rest is for the OS and page cache.
const MEMORY_SHARE_NUMERATOR: u64 = 3;
const MEMORY_SHARE_DENOMINATOR: u64 = 4;

/// Memory model constants: generous upper bounds from measurements (idle RSS ~6 MiB).
const BASE_BYTES: u64 = 8 * 1024 * 1024;
/// Stack pages a thread touches, plus its runtime bookkeeping.
const THREAD_BYTES: u64 = 256 * 1024;
/// A connection's task, channels and socket-side structures beyond its request bytes.
const CONNECTION_BYTES: u64 = 64 * 1024;
/// A hosted partition's fixed state: file handles, producer state, notifier, segment list.
const PARTITION_BYTES: u64 = 16 * 1024;
/// One in-memory index entry of the active segment (8-byte offset + 12-byte time entry).
const INDEX_ENTRY_PAIR_BYTES: u64 = 20;
/// One entry of the cleaner's offset map (128-bit key hash, i64 offset) with the hash table's
/// control bytes and spare capacity.
const OFFSET_MAP_ENTRY_BYTES: u64 = 48;
/// A consumer group's members and committed offsets (typical groups; metadata strings vary).
const GROUP_BYTES: u64 = 8 * 1024;
/// Leaders a node is modelled to follow at once (one fetcher and one answer in memory each):
/// a bramble of five. A larger cluster spreads the same partitions over more fetchers, each
/// answer still at most `replica_fetch_response_bytes_max`.
const FOLLOWED_LEADERS_MODELED: u64 = 4;

#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("unknown board {0:?}; built in: {1}")]
    Unknown(String, String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("board profile {name}: {message}")]
    Parse { name: String, message: String },
    #[error("board {board} has no settings for medium {medium}")]
    NoMedium { board: String, medium: Medium },
    #[error("config file {path}: {message}")]
    ConfigFile { path: PathBuf, message: String },
    #[error("board {board}: {field} does not fit: {reason}")]
    DoesNotFit {
        board: String,
        field: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Invalid(#[from] crate::config::ConfigError),
}

/// The storage a node's data directory sits on; it decides the group commit window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Medium {
    #[serde(rename = "sd")]
    Sd,
    #[serde(rename = "usb-ssd")]
    UsbSsd,
    #[serde(rename = "nvme")]
    Nvme,
}

impl Medium {
    pub fn as_str(self) -> &'static str {
        match self {
            Medium::Sd => "sd",
            Medium::UsbSsd => "usb-ssd",
            Medium::Nvme => "nvme",
        }
    }
}

impl std::fmt::Display for Medium {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Medium {
    type Err = String;
    fn from_str(s: &str) -> Result<Medium, String> {
        match s {
            "sd" => Ok(Medium::Sd),
            "usb-ssd" => Ok(Medium::UsbSsd),
            "nvme" => Ok(Medium::Nvme),
            other => Err(format!("unknown medium {other:?}: sd, usb-ssd or nvme")),
        }
    }
}

/// The `[board]` table of a profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardInfo {
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub models: Vec<String>,
    pub memory_bytes: u64,
    pub memory_max_bytes: u64,
    pub medium: Medium,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    board: BoardInfo,
    #[serde(default)]
    settings: toml::Table,
    #[serde(default)]
    media: BTreeMap<String, toml::Table>,
}

/// One parsed board profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub info: BoardInfo,
    settings: toml::Table,
    media: BTreeMap<Medium, toml::Table>,
}

impl Profile {
    pub fn parse(name: &str, text: &str) -> Result<Profile, BoardError> {
        let parse_error = |message: String| BoardError::Parse {
            name: name.to_string(),
            message,
        };
        let file: ProfileFile = toml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
        let mut media = BTreeMap::new();
        for (key, table) in file.media {
            media.insert(key.parse::<Medium>().map_err(parse_error)?, table);
        }
        Ok(Profile {
            info: file.board,
            settings: file.settings,
            media,
        })
    }

    /// A built-in profile by name, or a profile file when the name looks like a path.
    pub fn load(name: &str) -> Result<Profile, BoardError> {
        if is_path(name) {
            let path = PathBuf::from(name);
            let text = std::fs::read_to_string(&path)
                .map_err(|source| BoardError::Read { path, source })?;
            return Profile::parse(name, &text);
        }
        match BUILT_IN.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => Profile::parse(n, text),
            None => Err(BoardError::Unknown(name.to_string(), built_in_names())),
        }
    }

    /// Defaults, then this profile's settings, then the medium's, then `overrides` (a config
    /// file's table), as one `Config`.
    pub fn layer(&self, medium: Medium, overrides: toml::Table) -> Result<Config, BoardError> {
        let media = self.media.get(&medium).ok_or(BoardError::NoMedium {
            board: self.info.name.clone(),
            medium,
        })?;
        let mut table = self.settings.clone();
        table.extend(media.clone());
        table.extend(overrides);
        toml::Value::Table(table)
            .try_into::<Config>()
            .map_err(|e| BoardError::Parse {
                name: self.info.name.clone(),
                message: e.message().to_string(),
            })
    }
}

/// `--board` takes a profile file when the value looks like a path.
fn is_path(board: &str) -> bool {
    board.ends_with(".toml") || board.contains('/')
}

pub fn built_in_names() -> String {
    BUILT_IN
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The built-in profile whose `models` has the longest prefix of `model` (the text of
/// `/proc/device-tree/model`, e.g. "Raspberry Pi 4 Model B Rev 1.4").
pub fn detect(model: &str) -> Option<&'static str> {
    let model = model.trim_end_matches('\0').trim();
    let mut best: Option<(&'static str, usize)> = None;
    for (name, text) in BUILT_IN {
        let Ok(profile) = Profile::parse(name, text) else {
            continue;
        };
        for prefix in &profile.info.models {
            let longer = best.is_none_or(|(_, len)| prefix.len() > len);
            if model.starts_with(prefix.as_str()) && longer {
                best = Some((name, prefix.len()));
            }
        }
    }
    best.map(|(name, _)| name)
}

/// `--board auto`: the model file's board, or [`FALLBACK`] with the reason logged.
pub fn detect_from_system() -> &'static str {
    let path = std::env::var_os(MODEL_PATH_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(MODEL_PATH));
    match std::fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let model = text.trim_end_matches('\0').trim();
            match detect(model) {
                Some(name) => {
                    tracing::info!(board = name, model, "board detected");
                    name
                }
                None => {
                    tracing::warn!(
                        model,
                        fallback = FALLBACK,
                        "no board profile for this model; using the generic profile"
                    );
                    FALLBACK
                }
            }
        }
        Err(e) => {
            tracing::info!(path = %path.display(), error = %e, fallback = FALLBACK,
                "no device-tree model; using the fallback profile");
            FALLBACK
        }
    }
}

/// The node's memory budgets, as (setting, bytes) terms whose sum bounds its RSS. Estimates
/// for the parts not held by a byte budget (threads, connections, groups) are upper bounds from
/// measurement; the active segments' in-memory indexes assume every partition uses the node's
/// `segment_bytes` and `index_interval_bytes`.
pub fn memory_model(c: &Config) -> Vec<(&'static str, u64)> {
    let workers = worker_threads(c);
    let index_entries =
        (c.segment_bytes / u64::from(c.index_interval_bytes.max(1))).saturating_add(1);
    let per_partition =
        PARTITION_BYTES.saturating_add(index_entries.saturating_mul(INDEX_ENTRY_PAIR_BYTES));
    // Saturating: absurd settings must come out as "does not fit", never wrap around to a fit.
    let times = |count: usize, each: u64| (count as u64).saturating_mul(each);
    vec![
        ("base", BASE_BYTES),
        ("worker_threads", times(workers, THREAD_BYTES)),
        (
            "blocking_threads_max",
            times(c.blocking_threads_max, THREAD_BYTES),
        ),
        (
            "connections_max",
            times(c.connections_max, CONNECTION_BYTES),
        ),
        ("inflight_bytes_max", c.inflight_bytes_max as u64),
        (
            "fetch_inflight_bytes_max",
            c.fetch_inflight_bytes_max as u64,
        ),
        // Answering followers' fetches, then the answers this node's fetchers read.
        (
            "replica_fetch_inflight_bytes_max",
            c.replica_fetch_inflight_bytes_max as u64,
        ),
        (
            "replica_fetch_response_bytes_max",
            (c.replica_fetch_response_bytes_max as u64).saturating_mul(FOLLOWED_LEADERS_MODELED),
        ),
        // ListOffsets by timestamp looking inside (and decompressing) stored batches.
        ("decompress_bytes_max", c.decompress_bytes_max as u64),
        ("compaction", compaction_bytes(c)),
        ("partitions_max", times(c.partitions_max, per_partition)),
        ("groups_max", times(c.groups_max, GROUP_BYTES)),
        // A snappy batch produced to a compacted topic decodes whole (`api::produce`), at most
        // message_bytes_max, in at most one key check per worker thread (`Broker::key_checks`).
        (
            "message_bytes_max",
            times(workers, u64::from(c.message_bytes_max)),
        ),
        // One scrubber pass at a time, through one chunk buffer (log::scrub).
        (
            "scrub_interval_ms",
            if c.scrub_interval_ms > 0 {
                crate::log::SCRUB_CHUNK_BYTES as u64
            } else {
                0
            },
        ),
    ]
}

/// The runtime's worker threads: `worker_threads`, or one per core when 0 (tokio's default).
pub fn worker_threads(c: &Config) -> usize {
    match c.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// The cleaner (one pass at a time, node-wide): its offset map, and one batch read (at most a
/// frame), decompressed and re-encoded (each at most `compaction::BATCH_BYTES_MAX`).
fn compaction_bytes(c: &Config) -> u64 {
    let map = (crate::log::OFFSET_MAP_KEYS_MAX as u64).saturating_mul(OFFSET_MAP_ENTRY_BYTES);
    let batch = (c.frame_bytes_max as u64).min(crate::log::COMPACTION_BATCH_BYTES_MAX as u64);
    let records = crate::log::COMPACTION_BATCH_BYTES_MAX as u64;
    map.saturating_add(batch)
        .saturating_add(records.saturating_mul(2))
}

/// Checks the profile's share of the board and that the settings' budgets fit in it; returns the
/// modelled total.
pub fn check_fits(c: &Config, board: &BoardInfo) -> Result<u64, BoardError> {
    let share = board.memory_bytes / MEMORY_SHARE_DENOMINATOR * MEMORY_SHARE_NUMERATOR;
    if board.memory_max_bytes > share {
        return Err(BoardError::DoesNotFit {
            board: board.name.clone(),
            field: "memory_max_bytes",
            reason: format!(
                "{} B is more than 3/4 of the board's {} B of RAM",
                board.memory_max_bytes, board.memory_bytes
            ),
        });
    }
    let terms = memory_model(c);
    let total = terms
        .iter()
        .fold(0u64, |sum, (_, b)| sum.saturating_add(*b));
    if total <= board.memory_max_bytes {
        return Ok(total);
    }
    let (field, largest) = terms
        .iter()
        .filter(|(name, _)| *name != "base")
        .max_by_key(|(_, b)| *b)
        .copied()
        .unwrap_or(("base", BASE_BYTES));
    let breakdown = terms
        .iter()
        .map(|(name, b)| format!("{name} {} MiB", b / (1024 * 1024)))
        .collect::<Vec<_>>()
        .join(", ");
    Err(BoardError::DoesNotFit {
        board: board.name.clone(),
        field,
        reason: format!(
            "the budgets add up to {} MiB, over the board's memory_max_bytes of {} MiB; \
             {field} takes the most ({} MiB): lower it ({breakdown})",
            total / (1024 * 1024),
            board.memory_max_bytes / (1024 * 1024),
            largest / (1024 * 1024)
        ),
    })
}

/// What `serve` runs with: the layered settings and the board they came from, if any.
#[derive(Debug)]
pub struct Resolved {
    pub config: Config,
    pub board: Option<Chosen>,
}

/// The board a node runs as.
#[derive(Debug)]
pub struct Chosen {
    pub info: BoardInfo,
    pub medium: Medium,
    /// The memory model's total for the final settings (set by [`Resolved::check`]).
    pub budgets_bytes: u64,
}

/// Layers a config file over a board profile. `board` and `medium` come from flags or, failing
/// those, from the file's own `board` / `medium` keys; with neither, the file alone (as before
/// profiles existed). Flags other than these are applied by the caller, then
/// [`Resolved::check`] runs.
pub fn resolve(
    board: Option<&str>,
    medium: Option<Medium>,
    config_file: Option<&Path>,
) -> Result<Resolved, BoardError> {
    let mut table = match config_file {
        Some(path) => read_table(path)?,
        None => toml::Table::new(),
    };
    // A profile file named by the config file is relative to that file, not to the working
    // directory (which is / under systemd).
    let file_board = take_string(&mut table, "board", config_file)?.map(|b| {
        match config_file.and_then(Path::parent) {
            Some(dir) if is_path(&b) && Path::new(&b).is_relative() => {
                dir.join(b).to_string_lossy().into_owned()
            }
            _ => b,
        }
    });
    let file_medium = take_string(&mut table, "medium", config_file)?;
    let board = board.map(str::to_string).or(file_board);
    let Some(board) = board else {
        if let Some(m) = medium.map(|m| m.to_string()).or(file_medium) {
            return Err(BoardError::ConfigFile {
                path: config_file.map_or_else(|| PathBuf::from("--medium"), Path::to_path_buf),
                message: format!("medium {m} needs a board (--board NAME or board = \"…\")"),
            });
        }
        let config = toml::Value::Table(table)
            .try_into::<Config>()
            .map_err(|e| BoardError::ConfigFile {
                path: config_file.map(Path::to_path_buf).unwrap_or_default(),
                message: e.message().to_string(),
            })?;
        return Ok(Resolved {
            config,
            board: None,
        });
    };
    let name = if board == "auto" {
        detect_from_system()
    } else {
        board.as_str()
    };
    let profile = Profile::load(name)?;
    let medium = match (medium, file_medium) {
        (Some(m), _) => m,
        (None, Some(m)) => m.parse().map_err(|message| BoardError::ConfigFile {
            path: config_file.map(Path::to_path_buf).unwrap_or_default(),
            message,
        })?,
        (None, None) => profile.info.medium,
    };
    // The built-in profiles are checked in tests, so a bad key here is the file's.
    let mut config = profile
        .layer(medium, table)
        .map_err(|e| match (e, config_file) {
            (BoardError::Parse { name, message }, Some(path)) => BoardError::ConfigFile {
                path: path.to_path_buf(),
                message: format!("{message} (layered over board profile {name})"),
            },
            (e, _) => e,
        })?;
    config.board = Some(format!("{}/{medium}", profile.info.name));
    Ok(Resolved {
        config,
        board: Some(Chosen {
            info: profile.info,
            medium,
            budgets_bytes: 0,
        }),
    })
}

impl Resolved {
    /// Validates the settings, then (with a board) that their budgets fit it.
    pub fn check(&mut self) -> Result<(), BoardError> {
        self.config.validate()?;
        if let Some(board) = &mut self.board {
            board.budgets_bytes = check_fits(&self.config, &board.info)?;
        }
        Ok(())
    }
}

/// RAM this machine reports (`MemTotal` of /proc/meminfo), if it can be read.
pub fn machine_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// A profile sized for more RAM than this machine has (a Pi 4 profile on a 1 GB Pi 4): the
/// budgets fit the profile but maybe not the machine. A warning, not an error: containers and
/// cgroups can report RAM that differs from the board's.
pub fn machine_fit_warning(board: &BoardInfo, machine_bytes: u64) -> Option<String> {
    let needed = board.memory_max_bytes / MEMORY_SHARE_NUMERATOR * MEMORY_SHARE_DENOMINATOR;
    (machine_bytes < needed).then(|| {
        format!(
            "this machine has {} MiB of RAM; board {} gives bramble {} MiB, which wants {} MiB: \
             pick a smaller board or lower its budgets",
            machine_bytes >> 20,
            board.name,
            board.memory_max_bytes >> 20,
            needed >> 20
        )
    })
}

fn read_table(path: &Path) -> Result<toml::Table, BoardError> {
    let text = std::fs::read_to_string(path).map_err(|source| BoardError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e: toml::de::Error| BoardError::ConfigFile {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })
}

fn take_string(
    table: &mut toml::Table,
    key: &str,
    path: Option<&Path>,
) -> Result<Option<String>, BoardError> {
    match table.remove(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(BoardError::ConfigFile {
            path: path.map(Path::to_path_buf).unwrap_or_default(),
            message: format!("{key} must be a string"),
        }),
    }
}

#[cfg(test)]
mod tests;
