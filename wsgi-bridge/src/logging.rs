//! Logs in gunicorn's format, so students can put the two side by side:
//!
//! ```text
//! [2026-11-21 09:41:47 +0000] [12345] [INFO] Listening at: http://127.0.0.1:8000 (12345)
//! ```
//!
//! Error and info logs go to stderr; the access log (one line per request,
//! Apache's combined format as gunicorn writes it) goes to stdout or a file.

use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The log levels gunicorn and uWSGI users know, as `--log-level` takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl LogLevel {
    fn filter(self) -> LevelFilter {
        match self {
            LogLevel::Debug => LevelFilter::Debug,
            LogLevel::Info => LevelFilter::Info,
            LogLevel::Warning => LevelFilter::Warn,
            LogLevel::Error | LogLevel::Critical => LevelFilter::Error,
        }
    }
}

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARNING",
            Level::Info => "INFO",
            Level::Debug | Level::Trace => "DEBUG",
        };
        // One write per line, so lines from several processes or threads
        // sharing the terminal never interleave mid-line.
        let line = format!(
            "[{}] [{}] [{}] {}\n",
            log_timestamp(SystemTime::now()),
            std::process::id(),
            level,
            record.args()
        );
        let _ = io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the stderr logger at `level`. Safe to call more than once (a
/// forked worker inherits the logger already installed by its master).
pub fn init(level: LogLevel) {
    static LOGGER: StderrLogger = StderrLogger;
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level.filter());
}

/// Where access log lines go: `-` is stdout, anything else a file appended to.
pub enum AccessLog {
    Stdout,
    File { path: String, file: Mutex<File> },
}

/// Set by SIGUSR1 (see [`reopen_on_signal`]): the next access log line opens
/// the file again first.
static REOPEN: std::sync::LazyLock<std::sync::Arc<AtomicBool>> =
    std::sync::LazyLock::new(|| std::sync::Arc::new(AtomicBool::new(false)));

/// Makes `signal` (SIGUSR1, as in gunicorn) reopen the access log file at
/// the next line written. What logrotate needs: it renames the file, then
/// signals the server, which goes on writing into a new file of the old
/// name instead of the renamed one.
pub fn reopen_on_signal(signal: libc::c_int) -> io::Result<()> {
    signal_hook::flag::register(signal, REOPEN.clone()).map(drop)
}

impl AccessLog {
    pub fn open(target: &str) -> io::Result<AccessLog> {
        if target == "-" {
            return Ok(AccessLog::Stdout);
        }
        let file = File::options().create(true).append(true).open(target)?;
        Ok(AccessLog::File {
            path: target.to_string(),
            file: Mutex::new(file),
        })
    }

    /// Opens the file again, if reopening was asked for since the last line.
    fn reopen_if_asked(&self) {
        let AccessLog::File { path, file } = self else {
            return;
        };
        if !REOPEN.swap(false, Ordering::Relaxed) {
            return;
        }
        match File::options().create(true).append(true).open(path) {
            Ok(new) => {
                if let Ok(mut file) = file.lock() {
                    *file = new;
                }
            }
            Err(e) => log::error!("cannot reopen the access log {path}: {e}"),
        }
    }

    /// Writes one line in Apache's combined format, as gunicorn's default
    /// `access_log_format` does:
    /// `127.0.0.1 - - [21/Nov/2026:09:41:47 +0000] "GET / HTTP/1.1" 200 14 "-" "curl/8.5.0"`
    pub fn write(&self, entry: &AccessEntry<'_>) {
        let line = format!(
            "{} - - [{}] \"{}\" {} {} \"{}\" \"{}\"\n",
            entry.remote_addr,
            access_timestamp(SystemTime::now()),
            entry.request_line,
            entry.status,
            entry.body_bytes,
            entry.referer.unwrap_or("-"),
            entry.user_agent.unwrap_or("-"),
        );
        self.reopen_if_asked();
        match self {
            AccessLog::Stdout => {
                let _ = io::stdout().lock().write_all(line.as_bytes());
            }
            AccessLog::File { file, .. } => {
                if let Ok(mut file) = file.lock() {
                    let _ = file.write_all(line.as_bytes());
                }
            }
        }
    }
}

/// What an access log line says about one request.
pub struct AccessEntry<'a> {
    pub remote_addr: &'a str,
    pub request_line: &'a str,
    pub status: u16,
    pub body_bytes: u64,
    pub referer: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// The process-wide access log, if `--access-logfile` asked for one.
static ACCESS_LOG: OnceLock<AccessLog> = OnceLock::new();

pub fn set_access_log(log: AccessLog) {
    let _ = ACCESS_LOG.set(log);
}

pub fn access_log() -> Option<&'static AccessLog> {
    ACCESS_LOG.get()
}

use http_codec::response::civil;

fn log_timestamp(t: SystemTime) -> String {
    let c = civil(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} +0000",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

fn access_timestamp(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let c = civil(t);
    format!(
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
        c.day,
        MONTHS[(c.month - 1) as usize],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use std::time::UNIX_EPOCH;

    #[test]
    fn timestamps_match_gunicorns_formats() {
        // 2026-11-21 09:41:47 UTC
        let t = UNIX_EPOCH + Duration::from_secs(1_795_254_107);
        assert_eq!(log_timestamp(t), "2026-11-21 09:41:47 +0000");
        assert_eq!(access_timestamp(t), "21/Nov/2026:09:41:47 +0000");
        // A leap day, and the epoch itself.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(log_timestamp(leap), "2000-02-29 00:00:00 +0000");
        assert_eq!(log_timestamp(UNIX_EPOCH), "1970-01-01 00:00:00 +0000");
    }
}
