//! bench::disk: `bramble bench disk`, the medium's own ceiling measured the way the broker's disk
//! writer writes (`io::StdStorage`): sequential `pwrite`s of `chunk_bytes` appended to one file,
//! and an fdatasync after every `sync_every` chunks (1 = every chunk, like group commit with one
//! group per sync). Latency is per sync group: its writes plus its fdatasync. The file is created
//! fresh in `dir` and removed afterwards, also on error.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::histogram::Histogram;
use super::{BenchError, Latency, MB_BYTES, table};

/// Bounds on the command's inputs.
pub const CHUNK_BYTES_MAX: u64 = 64 * 1024 * 1024;
pub const TOTAL_BYTES_MAX: u64 = 1 << 40;

#[derive(Debug, Clone)]
pub struct DiskOptions {
    pub dir: PathBuf,
    pub chunk_bytes: u64,
    pub total_bytes: u64,
    pub sync_every: u64,
}

/// One run's figures. Latencies in ms, MB = 10^6 bytes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DiskReport {
    pub dir: String,
    pub chunk_bytes: u64,
    pub sync_every: u64,
    pub bytes: u64,
    pub syncs: u64,
    pub elapsed_s: f64,
    pub mb_per_s: f64,
    pub syncs_per_s: f64,
    pub latency_ms: Latency,
}

/// Removes the probe file when dropped.
struct ProbeFile {
    path: PathBuf,
    file: File,
}

impl ProbeFile {
    fn create(dir: &Path) -> Result<ProbeFile, BenchError> {
        let path = dir.join(format!("bramble-bench-disk-{}.tmp", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| BenchError::Io {
                what: "cannot create",
                path: path.clone(),
                source,
            })?;
        Ok(ProbeFile { path, file })
    }

    fn io_error(&self, source: std::io::Error) -> BenchError {
        BenchError::Io {
            what: "cannot write or sync",
            path: self.path.clone(),
            source,
        }
    }
}

impl Drop for ProbeFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn check(opts: &DiskOptions) -> Result<(), BenchError> {
    if !(1..=CHUNK_BYTES_MAX).contains(&opts.chunk_bytes) {
        return Err(BenchError::Invalid(
            "--chunk-bytes must be 1..=64 MiB".into(),
        ));
    }
    if !(opts.chunk_bytes..=TOTAL_BYTES_MAX).contains(&opts.total_bytes) {
        return Err(BenchError::Invalid(
            "--total-bytes must be at least --chunk-bytes and at most 1 TiB".into(),
        ));
    }
    if opts.sync_every == 0 {
        return Err(BenchError::Invalid(
            "--sync-every must be at least 1".into(),
        ));
    }
    Ok(())
}

/// Runs the probe (blocking: call it outside an async runtime or in `spawn_blocking`).
pub fn run(opts: &DiskOptions) -> Result<DiskReport, BenchError> {
    check(opts)?;
    let probe = ProbeFile::create(&opts.dir)?;
    let chunk: Vec<u8> = (0..opts.chunk_bytes).map(|i| (i % 251) as u8 + 1).collect();
    let chunks = opts.total_bytes / opts.chunk_bytes;
    let mut latency_us = Histogram::new();
    let start = Instant::now();
    let mut group_start = start;
    for i in 0..chunks {
        probe
            .file
            .write_all_at(&chunk, i * opts.chunk_bytes)
            .map_err(|e| probe.io_error(e))?;
        if (i + 1) % opts.sync_every == 0 || i + 1 == chunks {
            probe.file.sync_data().map_err(|e| probe.io_error(e))?;
            latency_us.record(group_start.elapsed().as_micros() as u64);
            group_start = Instant::now();
        }
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    let bytes = chunks * opts.chunk_bytes;
    Ok(DiskReport {
        dir: opts.dir.display().to_string(),
        chunk_bytes: opts.chunk_bytes,
        sync_every: opts.sync_every,
        bytes,
        syncs: latency_us.count(),
        elapsed_s,
        mb_per_s: bytes as f64 / MB_BYTES / elapsed_s,
        syncs_per_s: latency_us.count() as f64 / elapsed_s,
        latency_ms: Latency::from_us(&latency_us),
    })
}

pub fn render(r: &DiskReport) -> String {
    let l = &r.latency_ms;
    table(
        &format!(
            "disk: {} B in chunks of {} B to {}, fdatasync every {} chunk(s)",
            r.bytes, r.chunk_bytes, r.dir, r.sync_every
        ),
        &[
            ("elapsed", format!("{:.2} s", r.elapsed_s)),
            ("MB/s", format!("{:.2}", r.mb_per_s)),
            ("syncs/s", format!("{:.0}", r.syncs_per_s)),
            (
                "write+sync ms p50/p99/p99.9/max",
                format!("{:.2} / {:.2} / {:.2} / {:.2}", l.p50, l.p99, l.p999, l.max),
            ),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_writes_syncs_and_cleans_up() {
        // Proves the cadence (10 chunks, a sync every 4 → 3 syncs, the last one partial) and that
        // the probe file is gone afterwards.
        let dir = tempfile::tempdir().unwrap();
        let opts = DiskOptions {
            dir: dir.path().to_path_buf(),
            chunk_bytes: 4096,
            total_bytes: 40_960,
            sync_every: 4,
        };
        let r = run(&opts).unwrap();
        assert_eq!((r.bytes, r.syncs), (40_960, 3));
        assert!(r.latency_ms.p50 <= r.latency_ms.p99 && r.latency_ms.p99 <= r.latency_ms.max);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(
            run(&DiskOptions {
                sync_every: 0,
                ..opts
            })
            .is_err()
        );
    }
}
