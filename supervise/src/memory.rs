//! How much memory a process uses, as Linux reports it in `/proc`: what a
//! supervisor shows about its children (stage 3's `--stats`), and what the
//! tests and benchmarks measure.

/// Resident set size in KiB: every page of the process that is in RAM,
/// shared with other processes or not (`VmRSS` in `/proc/PID/status`).
/// `None` when the process is gone (or this is not Linux).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&status, "VmRSS:")
}

/// Proportional set size in KiB: each shared page divided among the
/// processes sharing it (`/proc/PID/smaps_rollup`, Linux 4.14 and later).
/// The honest per-worker figure once forked workers share the master's
/// pages (`--preload`).
pub fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    kib_field(&rollup, "Pss:")
}

/// The value of a `Name:   1234 kB` line.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory() {
        let pid = std::process::id();
        assert!(rss_kib(pid).is_some_and(|kib| kib > 0));
        assert!(pss_kib(pid).is_some_and(|kib| kib > 0));
        assert_eq!(kib_field("VmRSS:\t   1234 kB\n", "VmRSS:"), Some(1234));
    }
}
