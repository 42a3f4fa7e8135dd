//! Real nginx, started by hand for a test: the front of stage 4 (and of the
//! uWSGI peer in the benchmarks), configured the way the book shows.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::server::ServerProcess;

/// Where nginx is, if it is installed (`/usr/sbin` is not on every PATH).
pub fn nginx_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("nginx"))
            .collect::<Vec<_>>()
    });
    on_path
        .chain(
            [
                "/usr/sbin/nginx",
                "/usr/local/sbin/nginx",
                "/opt/homebrew/bin/nginx",
            ]
            .map(PathBuf::from),
        )
        .find(|p| p.is_file())
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

/// The configuration of nginx in front of a uwsgi upstream (`unix:/path` or
/// `host:port`). Runs unprivileged: every path inside `dir`. When started
/// by root, nginx would switch its workers to `nobody`, who may not reach
/// the socket: `user` keeps them as the current user.
pub fn uwsgi_front_config(dir: &Path, port: u16, upstream: &str, client_max_body: &str) -> String {
    let d = dir.display();
    let user = if nix_is_root() { "user root;\n" } else { "" };
    format!(
        "{user}worker_processes 1;
pid {d}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size {client_max_body};
    client_body_buffer_size 128k;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        location / {{
            include {params};
            uwsgi_pass {upstream};
        }}
    }}
}}
",
        params = uwsgi_params_path(dir).display()
    )
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// nginx's stock `uwsgi_params`, written into `dir` (the package's copy is
/// not everywhere in the same place).
fn uwsgi_params_path(dir: &Path) -> PathBuf {
    dir.join("uwsgi_params")
}

/// The `uwsgi_params` file nginx ships, as it ships it.
pub const UWSGI_PARAMS: &str = "uwsgi_param  QUERY_STRING       $query_string;
uwsgi_param  REQUEST_METHOD     $request_method;
uwsgi_param  CONTENT_TYPE       $content_type;
uwsgi_param  CONTENT_LENGTH     $content_length;

uwsgi_param  REQUEST_URI        $request_uri;
uwsgi_param  PATH_INFO          $document_uri;
uwsgi_param  DOCUMENT_ROOT      $document_root;
uwsgi_param  SERVER_PROTOCOL    $server_protocol;
uwsgi_param  REQUEST_SCHEME     $scheme;
uwsgi_param  HTTPS              $https if_not_empty;

uwsgi_param  REMOTE_ADDR        $remote_addr;
uwsgi_param  REMOTE_PORT        $remote_port;
uwsgi_param  SERVER_PORT        $server_port;
uwsgi_param  SERVER_NAME        $server_name;
";

/// Starts nginx in front of `upstream`; `None` (with a printed line) if
/// nginx is not installed. For tests: any other failure panics.
pub fn start_uwsgi_front(upstream: &str, client_max_body: &str) -> Option<Nginx> {
    if nginx_binary().is_none() {
        eprintln!("SKIPPED: nginx is not installed (apt-get install nginx)");
        return None;
    }
    Some(try_uwsgi_front(upstream, client_max_body).unwrap_or_else(|e| panic!("{e}")))
}

/// Starts nginx in front of `upstream` (`unix:/path` or `host:port`), in a
/// private directory of its own, on a free port; the error says why not.
pub fn try_uwsgi_front(upstream: &str, client_max_body: &str) -> Result<Nginx, String> {
    let binary = nginx_binary().ok_or("nginx is not installed (apt-get install nginx)")?;
    let dir = std::env::temp_dir().join(format!(
        "wsgi-course-nginx-{}-{}",
        std::process::id(),
        free_port()
    ));
    let io = |what: &str, e: std::io::Error| format!("cannot write {what} for nginx: {e}");
    std::fs::create_dir_all(&dir).map_err(|e| io("its directory", e))?;
    std::fs::write(uwsgi_params_path(&dir), UWSGI_PARAMS).map_err(|e| io("uwsgi_params", e))?;
    let port = free_port();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        uwsgi_front_config(&dir, port, upstream, client_max_body),
    )
    .map_err(|e| io("nginx.conf", e))?;
    let mut cmd = Command::new(binary);
    cmd.arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg("stderr")
        .args(["-g", "daemon off;"]);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    match ServerProcess::start_command_at("nginx", cmd, addr) {
        Ok(process) => Ok(Nginx { process, addr, dir }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}
