//! Real nginx, started by hand for a test or a benchmark: the front of
//! stage 4 (and of the uWSGI peer in the benchmarks).
//!
//! Its configuration is stage 5's ([`stage5_nginx::config`]), with the
//! settings a test needs: one worker, no static files, no access log, every
//! file in a private directory. So what the tests check behind nginx is the
//! configuration stage 5 ships, `uwsgi_params` included.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;

use stage5_nginx::config::{self, NginxSettings};

use crate::server::ServerProcess;

/// Where nginx is, if it is installed: where stage 5 looks (`PATH`, then
/// where packages put it; `/usr/sbin` is not on every PATH).
pub fn nginx_binary() -> Option<PathBuf> {
    stage5_nginx::programs::find_nginx(None).ok()
}

/// A port free right now, for nginx's `listen` (nginx cannot report a port 0
/// choice back, so the harness picks one).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on loopback")
}

/// A running nginx whose files all live in a private directory.
pub struct Nginx {
    pub process: ServerProcess,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.process.terminate(std::time::Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The settings of nginx in front of a uwsgi `upstream` (`unix:/path` or
/// `host:port`), listening on `port`, with every file in `dir`. One worker
/// process (the benchmarks count on one); `max_body`: the largest request
/// body, in bytes.
pub fn front_settings(dir: &Path, port: u16, upstream: &str, max_body: u64) -> NginxSettings {
    NginxSettings {
        run_dir: dir.to_path_buf(),
        listen: ([127, 0, 0, 1], port).into(),
        worker_processes: Some(1),
        static_dir: None,
        upstreams: vec![upstream.to_string()],
        max_body,
        // nginx's default uwsgi_read_timeout.
        read_timeout: 60,
        access_log: None,
        user: config::user_when_root(),
        max_temp_file: config::DEFAULT_MAX_TEMP_FILE,
        files: config::FileOptions::default(),
        upstream: Default::default(),
    }
}

/// Starts nginx in front of `upstream`; `None` (with a printed line) if
/// nginx is not installed. For tests: any other failure panics.
pub fn start_uwsgi_front(upstream: &str, max_body: u64) -> Option<Nginx> {
    if nginx_binary().is_none() {
        eprintln!("SKIPPED: nginx is not installed (apt-get install nginx)");
        return None;
    }
    Some(try_uwsgi_front(upstream, max_body).unwrap_or_else(|e| panic!("{e}")))
}

/// Starts nginx in front of `upstream` (`unix:/path` or `host:port`), in a
/// private directory of its own, on a free port; the error says why not.
pub fn try_uwsgi_front(upstream: &str, max_body: u64) -> Result<Nginx, String> {
    let binary = nginx_binary().ok_or("nginx is not installed (apt-get install nginx)")?;
    let dir = std::env::temp_dir().join(format!(
        "wsgi-course-nginx-{}-{}",
        std::process::id(),
        free_port()
    ));
    let port = free_port();
    let settings = front_settings(&dir, port, upstream, max_body);
    let started = config::make_run_dir(&dir, None)
        .and_then(|()| config::write_files(&settings))
        .and_then(|()| {
            let argv = config::nginx_command(&binary, &settings);
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            ServerProcess::start_command_at("nginx", cmd, settings.listen)
        });
    match started {
        Ok(process) => Ok(Nginx {
            process,
            addr: settings.listen,
            dir,
        }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}
