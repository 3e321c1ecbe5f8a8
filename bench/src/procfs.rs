//! What the kernel says about a process (`/proc/<pid>/stat`, `/proc/<pid>/status`), and the
//! clock the bench and the sink share.

use anyhow::Context;

/// The fields of `/proc/<pid>/stat` from field 3 (state) on: field N is `[N - 3]`.
fn stat_fields(pid: u32) -> anyhow::Result<Vec<u64>> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: the fields that follow start after its `)`.
    let rest = &stat[stat.rfind(')').context("no `)` in /proc/<pid>/stat")? + 1..];
    // The state (a letter) reads as 0.
    Ok(rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect())
}

fn ticks_us(ticks: u64) -> f64 {
    ticks as f64 * 1e6 / rustix::param::clock_ticks_per_second() as f64
}

/// CPU time (user + system, all threads) the process used so far, in microseconds.
pub fn cpu_us(pid: u32) -> anyhow::Result<f64> {
    let f = stat_fields(pid)?;
    // utime is field 14, stime field 15.
    Ok(ticks_us(f[11] + f[12]))
}

/// The parent of a process.
pub fn parent(pid: u32) -> anyhow::Result<u32> {
    Ok(stat_fields(pid)?[1] as u32)
}

/// CPU time of a process and of all its children, those it reaped (cutime, cstime: fields
/// 16 and 17) and those alive, in microseconds.
pub fn tree_cpu_us(pid: u32) -> anyhow::Result<f64> {
    let f = stat_fields(pid)?;
    let mut ticks = f[11] + f[12] + f[13] + f[14];
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        // A process that exits meanwhile is counted by its parent's cutime instead.
        if let Ok(c) = stat_fields(child)
            && c[1] == u64::from(pid)
        {
            ticks += c[11] + c[12];
        }
    }
    Ok(ticks_us(ticks))
}

/// A `Vm*` line of `/proc/<pid>/status` (`VmHWM`: peak resident set; `VmRSS`: now), in bytes.
pub fn vm_bytes(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("read /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|l| l.strip_prefix(':')))
        .with_context(|| format!("no {key} in /proc/{pid}/status"))?;
    let kb: u64 = line.trim().trim_end_matches("kB").trim().parse()?;
    Ok(kb * 1024)
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process of the machine, so the
/// sink's arrival times and the bench's send and accept times compare directly.
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
