//! What Linux says about a process: CPU time (user + system) from `/proc/<pid>/stat` and
//! peak resident memory (`VmHWM`) from `/proc/<pid>/status`.

use std::time::Duration;

use anyhow::Context;

/// User plus system CPU time the process has used so far.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_time(&text, ticks_per_second())
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the running system and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// Fields 14 and 15 (utime, stime) in clock ticks; the command name in field 2 may hold
/// spaces and parentheses, so fields are counted from its closing parenthesis.
fn parse_cpu_time(stat: &str, ticks: u64) -> anyhow::Result<Duration> {
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .context("no command name in stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, i.e. index 11 here.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(Duration::from_micros((utime + stime) * 1_000_000 / ticks))
}

/// Peak resident set size so far, in KiB.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_adds_user_and_system_ticks() {
        let stat = "1234 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4";
        assert_eq!(parse_cpu_time(stat, 100).unwrap(), Duration::from_secs(3));
    }

    #[test]
    fn this_process_has_a_peak_rss() {
        assert!(peak_rss_kib(std::process::id()).unwrap() > 0);
    }
}
