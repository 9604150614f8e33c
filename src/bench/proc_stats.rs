//! bench::proc_stats: what Linux says about a local broker process, read from /proc before and
//! after a run — peak RSS (VmHWM), CPU time (utime + stime) and the bytes it asked the block layer
//! to write (`/proc/PID/io` write_bytes, which counts page-cache writeback of its files, i.e.
//! what reaches the disk, headers and indexes included). Needs the same user as the broker.

use std::path::PathBuf;

use super::BenchError;

/// A sample of a process's counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    pub rss_kib_peak: u64,
    pub cpu_s: f64,
    pub write_bytes: u64,
}

fn read(pid: u32, file: &str) -> Result<String, BenchError> {
    let path = PathBuf::from(format!("/proc/{pid}/{file}"));
    std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
        what: "cannot read",
        path,
        source,
    })
}

fn malformed(pid: u32, file: &str) -> BenchError {
    BenchError::Invalid(format!("/proc/{pid}/{file}: unexpected format"))
}

/// The number after `key` on its line in a "key: value" file (status, io).
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// utime + stime in clock ticks from /proc/PID/stat: fields 14 and 15, counted after the
/// parenthesised command name (which may itself hold spaces or parentheses).
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace().skip(11); // field 3 is the first after ')'
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

pub fn sample(pid: u32) -> Result<ProcSample, BenchError> {
    let status = read(pid, "status")?;
    let rss_kib_peak = field(&status, "VmHWM:").ok_or_else(|| malformed(pid, "status"))?;
    let stat = read(pid, "stat")?;
    let ticks = cpu_ticks(&stat).ok_or_else(|| malformed(pid, "stat"))?;
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    let io = read(pid, "io")?;
    let write_bytes = field(&io, "write_bytes:").ok_or_else(|| malformed(pid, "io"))?;
    Ok(ProcSample {
        rss_kib_peak,
        cpu_s: ticks as f64 / hz,
        write_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_an_awkward_command_name() {
        let stat = "42 (bram ble) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let s = sample(std::process::id()).expect("own /proc entries");
        assert!(s.rss_kib_peak > 0);
        assert_eq!(
            field("a: 1\nwrite_bytes: 4096\n", "write_bytes:"),
            Some(4096)
        );
    }
}
