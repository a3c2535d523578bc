//! What Linux says about a process: CPU time (user + system) from `/proc/<pid>/stat`, that
//! of its threads of one name from `/proc/<pid>/task/<tid>/stat`, and peak resident memory
//! (`VmHWM`) from `/proc/<pid>/status`.

use std::time::Duration;

use anyhow::Context;

/// User plus system CPU time the process has used so far.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_time(&text, ticks_per_second())
}

/// User plus system CPU time used so far by this process's live threads whose name starts
/// with `prefix` (threads that have ended are not counted).
pub fn own_threads_cpu_time(prefix: &str) -> anyhow::Result<Duration> {
    let ticks = ticks_per_second();
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir("/proc/self/task").context("reading /proc/self/task")? {
        let Ok(stat) = std::fs::read_to_string(task?.path().join("stat")) else {
            // The thread ended since the directory was read.
            continue;
        };
        if thread_name(&stat).is_some_and(|name| name.starts_with(prefix)) {
            total += parse_cpu_time(&stat, ticks)?;
        }
    }
    Ok(total)
}

/// The command name of a `stat` line: between the first `(` and the last `)`.
fn thread_name(stat: &str) -> Option<&str> {
    Some(&stat[stat.find('(')? + 1..stat.rfind(')')?])
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
    fn a_thread_name_may_hold_parentheses() {
        let stat = "1234 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4";
        assert_eq!(thread_name(stat), Some("my (odd) name"));
    }

    #[test]
    fn only_the_named_threads_are_counted() {
        let busy = std::thread::Builder::new()
            .name("procstat-busy".into())
            .spawn(|| {
                // Spins until its CPU time shows (a few clock ticks); the bound on the wait
                // only ends a failing run.
                let start = std::time::Instant::now();
                let mut named = Duration::ZERO;
                while named < Duration::from_millis(30) && start.elapsed() < Duration::from_secs(20)
                {
                    for _ in 0..100_000 {
                        std::hint::black_box(start);
                    }
                    named = own_threads_cpu_time("procstat-busy").unwrap();
                }
                let none = own_threads_cpu_time("no-such-thread").unwrap();
                (named, none)
            })
            .unwrap();
        let (named, none) = busy.join().unwrap();
        assert!(named >= Duration::from_millis(30), "{named:?}");
        assert_eq!(none, Duration::ZERO);
    }

    #[test]
    fn this_process_has_a_peak_rss() {
        assert!(peak_rss_kib(std::process::id()).unwrap() > 0);
    }
}
