//! What the kernel says about a process (`/proc/<pid>/stat`, `/proc/<pid>/status`), and the
//! clock the bench and the sink share.

use anyhow::Context;

/// CPU time (user + system, all threads) the process used so far, in microseconds.
pub fn cpu_us(pid: u32) -> anyhow::Result<f64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: the fields that follow start after its `)`.
    let rest = &stat[stat.rfind(')').context("no `)` in /proc/<pid>/stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 * 1e6 / rustix::param::clock_ticks_per_second() as f64)
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
