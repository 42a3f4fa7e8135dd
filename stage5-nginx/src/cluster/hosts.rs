//! The app hosts: stage 4 started inside each namespace, on TCP, and what
//! the lab asks of it (its `--stats`, a probe request).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::Host;
use super::net;

/// What each host runs.
#[derive(Clone, Debug)]
pub struct AppSpec {
    pub stage4: PathBuf,
    /// MODULE:CALLABLE; `None`: stage 4's built-in hello app.
    pub module: Option<String>,
    pub chdir: Option<PathBuf>,
    pub workers: usize,
    /// `--harakiri` (nginx waits 10 s longer).
    pub harakiri: u64,
}

/// `ip netns exec wcl-h1 stage4-uwsgi-socket --socket 198.18.0.11:3031 …`:
/// stage 4 as it would run on its own machine, on TCP.
pub fn stage4_command(spec: &AppSpec, host: Host) -> Result<Vec<OsString>, String> {
    let mut cmd: Vec<OsString> = vec![
        net::tool("ip")?.into(),
        "netns".into(),
        "exec".into(),
        host.netns().into(),
        spec.stage4.clone().into(),
    ];
    let mut flag = |name: &str, value: OsString| {
        cmd.push(name.into());
        cmd.push(value);
    };
    flag("--socket", host.socket().to_string().into());
    flag("--processes", spec.workers.to_string().into());
    flag("--stats", host.stats().to_string().into());
    flag("--pidfile", host.pid_file().into());
    // As stage 5 does: nginx may have many requests waiting for a worker.
    flag(
        "--listen",
        crate::config::UPSTREAM_BACKLOG.to_string().into(),
    );
    flag("--harakiri", spec.harakiri.to_string().into());
    flag("--buffer-size", u16::MAX.to_string().into());
    if let Some(module) = &spec.module {
        flag("--module", module.into());
    }
    if let Some(dir) = &spec.chdir {
        flag("--chdir", dir.into());
    }
    Ok(cmd)
}

/// The host's `--stats` JSON, fetched over the bridge.
pub fn stats(host: Host) -> Result<serde_json::Value, String> {
    let addr = host.stats();
    let mut stream =
        net::connect(addr, Duration::from_millis(500)).map_err(|e| format!("{addr}: {e}"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    stream
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| format!("{addr}: {e}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).map_err(|e| format!("{addr}: not JSON ({e})"))
}

/// One uwsgi request for `/`, as nginx would send it: whether the host
/// answers it (any status line below 500).
pub fn probe(host: Host) -> bool {
    let vars: [(&str, &str); 9] = [
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", "/"),
        ("PATH_INFO", "/"),
        ("QUERY_STRING", ""),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_NAME", "cluster"),
        ("SERVER_PORT", "80"),
        ("REMOTE_ADDR", "198.18.0.1"),
        ("HTTP_HOST", "cluster"),
    ];
    let mut block = Vec::new();
    for (key, value) in vars {
        for word in [key, value] {
            block.extend_from_slice(&(word.len() as u16).to_le_bytes());
            block.extend_from_slice(word.as_bytes());
        }
    }
    let mut packet = vec![0u8];
    packet.extend_from_slice(&(block.len() as u16).to_le_bytes());
    packet.push(0);
    packet.extend_from_slice(&block);
    let answer = || -> std::io::Result<Vec<u8>> {
        let mut s = net::connect(host.socket(), Duration::from_millis(500))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(&packet)?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(out)
    };
    answer().is_ok_and(|out| {
        let line = String::from_utf8_lossy(&out[..out.len().min(16)]).into_owned();
        line.starts_with("HTTP/1.")
            && line
                .get(9..12)
                .and_then(|s| s.parse::<u16>().ok())
                .is_some_and(|code| code < 500)
    })
}

/// Stage 4's master in the host, from its pid file, if alive.
pub fn master(host: Host) -> Option<nix::unistd::Pid> {
    super::live_pid(&host.pid_file())
}

/// Waits until the host answers a probe; false after `timeout`.
pub fn wait_serving(host: Host, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if probe(host) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The numbers of one host's stats: (workers running, requests served,
/// the newest generation, whether every running worker is of it).
pub fn summary(stats: &serde_json::Value) -> (usize, u64, u64, bool) {
    let generation = stats["master"]["generation"].as_u64().unwrap_or(0);
    let workers = stats["workers"].as_array().cloned().unwrap_or_default();
    let running: Vec<_> = workers.iter().filter(|w| w["state"] == "running").collect();
    let requests = workers.iter().filter_map(|w| w["requests"].as_u64()).sum();
    let all_new = workers
        .iter()
        .all(|w| w["generation"].as_u64() == Some(generation) && w["state"] == "running");
    (running.len(), requests, generation, all_new)
}
