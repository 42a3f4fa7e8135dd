//! The files stage 5 writes for nginx: `nginx.conf` and `uwsgi_params`, in a
//! private run directory, and the command that starts nginx on them.
//! `--print-nginx-config` shows them.
//!
//! This is the workspace's only nginx configuration: the test harness puts
//! nginx in front of stage 4 (and of uWSGI in the benchmarks) with it too,
//! so what the tests check behind nginx is what stage 5 ships, and the
//! book's `book/examples/nginx.conf` is its output (checked by
//! `tests/book.rs`).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What the configuration depends on.
#[derive(Clone, Debug)]
pub struct NginxSettings {
    pub run_dir: PathBuf,
    pub listen: SocketAddr,
    /// `worker_processes`: `None` for `auto` (one per core).
    pub worker_processes: Option<usize>,
    /// The directory served at `/static/`; `None`: no `/static/` location
    /// (everything goes to the app).
    pub static_dir: Option<PathBuf>,
    /// Where nginx sends the app's requests, as `uwsgi_pass` names them:
    /// `unix:/path/app.sock` or `host:port`.
    pub upstreams: Vec<String>,
    /// `client_max_body_size`, in bytes.
    pub max_body: u64,
    /// How long nginx waits for the app's answer, in seconds.
    pub read_timeout: u64,
    /// Where nginx writes its access log (`/dev/stdout`, a file); `None`: no log.
    pub access_log: Option<PathBuf>,
    /// `user USER GROUP`, when nginx is started by root.
    pub user: Option<(String, String)>,
    /// `uwsgi_max_temp_file_size`, in bytes: how much of one response
    /// nginx may keep on disk for a client slower than the app.
    pub max_temp_file: u64,
    /// The URLs the static files (and uploads) are served at, and caching.
    pub files: FileOptions,
    /// How the upstream block picks a server, and what nginx does when one
    /// fails; the default writes nginx's defaults (nothing).
    pub upstream: UpstreamSettings,
}

/// The upstream block's settings, with nginx's names: the cluster lab
/// (`src/bin/cluster.rs`) sets them; stage 5 keeps nginx's defaults.
#[derive(Clone, Debug, Default)]
pub struct UpstreamSettings {
    /// The balancing method.
    pub method: Balance,
    /// Each server's parameters, in the order of `upstreams` (missing: none).
    pub servers: Vec<ServerParams>,
    /// `uwsgi_next_upstream` (e.g. `error timeout`, or `off`); `None`:
    /// nginx's default, `error timeout`.
    pub next_upstream: Option<String>,
    /// `uwsgi_next_upstream_tries`: how many servers one request may try
    /// (0: all of them, nginx's default).
    pub next_upstream_tries: Option<u32>,
    /// `uwsgi_connect_timeout`, in seconds; `None`: nginx's 60 s.
    pub connect_timeout: Option<u64>,
}

/// How nginx picks the server for a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Balance {
    /// Each server in turn (in proportion to its weight): nginx's default.
    #[default]
    RoundRobin,
    /// The server with the fewest requests in flight (`least_conn`).
    LeastConn,
    /// The server chosen by the client's address (`ip_hash`): a client
    /// always reaches the same server while it is up.
    IpHash,
}

impl Balance {
    /// The directive in the upstream block; round robin has none.
    pub fn directive(self) -> Option<&'static str> {
        match self {
            Balance::RoundRobin => None,
            Balance::LeastConn => Some("least_conn"),
            Balance::IpHash => Some("ip_hash"),
        }
    }
}

/// One `server` line's parameters, as nginx names them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerParams {
    /// `weight=N`: N requests for every 1 of a weight-1 server (default 1).
    pub weight: Option<u32>,
    /// `max_fails=N`: this many failures within `fail_timeout` and the
    /// server is left out for `fail_timeout` (default 1; 0: never).
    pub max_fails: Option<u32>,
    /// `fail_timeout=Ns` (default 10 s).
    pub fail_timeout: Option<u64>,
    /// `backup`: used only when every other server is down.
    pub backup: bool,
}

impl ServerParams {
    /// ` weight=3 max_fails=1 fail_timeout=5s backup`, or nothing.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(w) = self.weight {
            let _ = write!(out, " weight={w}");
        }
        if let Some(n) = self.max_fails {
            let _ = write!(out, " max_fails={n}");
        }
        if let Some(t) = self.fail_timeout {
            let _ = write!(out, " fail_timeout={t}s");
        }
        if self.backup {
            out.push_str(" backup");
        }
        out
    }
}

impl UpstreamSettings {
    /// The lines on top of the upstream block (the balancing method).
    fn method_lines(&self) -> String {
        match self.method.directive() {
            Some(d) => format!("        {d};\n"),
            None => String::new(),
        }
    }

    /// The retry and connect lines of `location /`, when set.
    fn location_lines(&self) -> String {
        let mut out = String::new();
        if let Some(t) = self.connect_timeout {
            out.push_str(
                "            # A host that does not answer at all (its link cut) costs\n\
                 \x20           # this much before nginx tries the next one.\n",
            );
            let _ = writeln!(out, "            uwsgi_connect_timeout {t}s;");
        }
        if let Some(next) = &self.next_upstream {
            out.push_str(
                "            # When nginx passes a request on to the next server. A POST\n\
                 \x20           # already sent is never passed on unless this also says\n\
                 \x20           # non_idempotent: it may have taken effect once already.\n",
            );
            let _ = writeln!(out, "            uwsgi_next_upstream {next};");
        }
        if let Some(n) = self.next_upstream_tries {
            let _ = writeln!(out, "            uwsgi_next_upstream_tries {n};");
        }
        out
    }
}

/// How nginx serves files itself: `static_dir` at `static_url`, a media
/// directory (uploads: Django's `MEDIA_ROOT`) at `media_url`, and how long
/// browsers may keep static files.
#[derive(Clone, Debug)]
pub struct FileOptions {
    /// Where `static_dir` appears (Django's `STATIC_URL`): `/static/`.
    pub static_url: String,
    /// nginx's `expires` for static files (`1h`, `7d`, `max`): an `Expires`
    /// header and `Cache-Control: max-age`. `None`: no caching headers.
    pub static_expires: Option<String>,
    /// A directory of uploaded files (Django's `MEDIA_ROOT`), served at
    /// `media_url` without caching headers (an upload may be replaced).
    pub media_dir: Option<PathBuf>,
    pub media_url: String,
}

impl Default for FileOptions {
    fn default() -> FileOptions {
        FileOptions {
            static_url: "/static/".into(),
            static_expires: Some("1h".into()),
            media_dir: None,
            media_url: "/media/".into(),
        }
    }
}

/// A URL prefix as a `location` wants it for `alias`: one leading and one
/// trailing slash (`static` and `/static` become `/static/`).
pub fn url_prefix(url: &str) -> String {
    let inner = url.trim_matches('/');
    if inner.is_empty() {
        "/".into()
    } else {
        format!("/{inner}/")
    }
}

/// nginx's table of Content-Types by file extension (its `conf/mime.types`,
/// completed), written into the run directory as `mime.types`.
pub const MIME_TYPES: &str = include_str!("../mime.types");

impl NginxSettings {
    pub fn conf_path(&self) -> PathBuf {
        self.run_dir.join("nginx.conf")
    }

    pub fn pid_path(&self) -> PathBuf {
        self.run_dir.join("nginx.pid")
    }

    pub fn params_path(&self) -> PathBuf {
        self.run_dir.join("uwsgi_params")
    }

    pub fn mime_types_path(&self) -> PathBuf {
        self.run_dir.join("mime.types")
    }

    /// Whether nginx sends any file itself (and so needs `mime.types`).
    pub fn serves_files(&self) -> bool {
        self.static_dir.is_some() || self.files.media_dir.is_some()
    }
}

/// `uwsgi_max_temp_file_size` unless told otherwise: 4 MiB of one response
/// on disk per slow client (nginx's own default is 1 GiB).
pub const DEFAULT_MAX_TEMP_FILE: u64 = 4 << 20;

/// `worker_connections` in nginx.conf, and the listen queue stage 5 asks of
/// stage 4's socket: as many requests as one nginx worker can have waiting
/// on the app.
pub const UPSTREAM_BACKLOG: u32 = 1024;

/// The comment on top of the nginx.conf stage 5 writes.
pub const STAGE5_HEADER: &str = "# Written by stage5-nginx for this run. Edit it and send HUP to\n\
                                 # stage5-nginx (kill -HUP <pid>) to have nginx load it again.\n";

/// nginx.conf for this run, as stage 5 writes it.
pub fn nginx_conf(s: &NginxSettings) -> String {
    nginx_conf_with(STAGE5_HEADER, s)
}

// ANCHOR: config_template
/// nginx.conf for this run, under the comment `header`. Every path nginx
/// writes is in the run directory, so nginx needs no root and leaves
/// nothing behind.
pub fn nginx_conf_with(header: &str, s: &NginxSettings) -> String {
    let run = s.run_dir.display();
    let user = match &s.user {
        Some((user, group)) => format!(
            "# Started by root, nginx runs its workers as this user: they face the\n\
             # network, and should not have root's rights. The run directory and\n\
             # the socket are open to this group, and to no one else (502,\n\
             # \"connect() ... failed (13: Permission denied)\" otherwise).\n\
             user {user} {group};\n"
        ),
        None => String::new(),
    };
    // The `location /static/` (and `/media/`) of the server block, when
    // there is a directory to serve.
    let files = &s.files;
    let mut static_files = String::new();
    if let Some(dir) = &s.static_dir {
        let expires = match &files.static_expires {
            Some(time) => format!(
                "            # Browsers may keep them {time} without asking again (Expires,\n\
                 \x20           # Cache-Control: max-age); after that, If-Modified-Since.\n\
                 \x20           expires {time};\n"
            ),
            None => String::new(),
        };
        let _ = write!(
            static_files,
            r#"        # Static files: nginx reads them and sends them itself.
        location {url} {{
            alias {dir}/;
{expires}        }}

"#,
            url = quoted(&url_prefix(&files.static_url)),
            dir = quoted(&dir.display().to_string())
        );
    }
    if let Some(dir) = &files.media_dir {
        let _ = write!(
            static_files,
            r#"        # Uploaded files (Django's MEDIA_ROOT): nginx sends them too.
        location {url} {{
            alias {dir}/;
        }}

"#,
            url = quoted(&url_prefix(&files.media_url)),
            dir = quoted(&dir.display().to_string())
        );
    }
    // The Content-Type of a file nginx sends, by its extension.
    let types = if s.serves_files() {
        format!(
            "    # The Content-Type of a static file, by its extension: nginx's full\n\
             \x20   # list, written next to this file.\n\
             \x20   include {};\n",
            quoted(&s.mime_types_path().display().to_string())
        )
    } else {
        String::new()
    };
    let servers: String = s
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let params = s.upstream.servers.get(i).map(ServerParams::render);
            format!("        server {u}{};\n", params.unwrap_or_default())
        })
        .collect();
    format!(
        r#"{header}{user}worker_processes {workers};
pid {run}/nginx.pid;
error_log stderr notice;
# A graceful stop (QUIT) waits for requests in flight, but not forever.
worker_shutdown_timeout {read_timeout}s;

events {{
    worker_connections {worker_connections};
}}

http {{
{types}    default_type application/octet-stream;

    # Apache's combined format (gunicorn's too), plus who answered:
    # upstream=- for a file nginx sent itself, the socket for the app.
    log_format course '$remote_addr - - [$time_local] "$request" $status '
                      '$body_bytes_sent "$http_referer" "$http_user_agent" '
                      'upstream=$upstream_addr time=$request_time';
    {access_log}

    # nginx's own files (request bodies too big for memory, responses it
    # buffers), in the run directory instead of /var/lib/nginx.
    client_body_temp_path {run}/client_body_temp;
    proxy_temp_path {run}/proxy_temp;
    fastcgi_temp_path {run}/fastcgi_temp;
    uwsgi_temp_path {run}/uwsgi_temp;
    scgi_temp_path {run}/scgi_temp;

    # A larger body is refused here with 413: Python never sees it.
    client_max_body_size {max_body};
    # A body nginx holds in memory before passing the request on; a larger
    # one goes to a file in client_body_temp first (the default, 16k, sends
    # every 64 KiB upload through the disk: a third of the speed).
    client_body_buffer_size 128k;
    sendfile on;

    # The port the client named in its Host header, for HTTP_HOST (see
    # uwsgi_params). nginx 1.30 has it built in: $is_request_port$request_port.
    map $http_host $port_in_host {{
        "~(?<port>:[0-9]+)$"  $port;
        default               "";
    }}

    # Where the app runs: stage 4's workers, on their socket. With more
    # servers here, nginx spreads requests across them (round robin).
    upstream app {{
{method}{servers}    }}

    server {{
        listen {listen};
        server_name localhost;

{static_files}        # Everything else goes to the app, as uwsgi packets.
        location / {{
            include {params};
            uwsgi_pass app;
            # nginx reads the app's answer as fast as the app writes it, and
            # keeps what a slow client has not taken yet: 256 KiB in memory,
            # then up to uwsgi_max_temp_file_size more in a file (nginx's
            # own default, 1 GiB per response, lets a few slow readers of
            # big responses fill the disk). Past it, nginx reads from the
            # app only as fast as the client takes, and the worker waits.
            uwsgi_buffers 16 16k;
            uwsgi_max_temp_file_size {max_temp_file};
            # Longer than --harakiri: a stuck worker is killed first, and
            # nginx answers 502. Shorter, nginx would give up first (504)
            # while the worker works on for nobody.
            uwsgi_read_timeout {read_timeout}s;
{retries}        }}
    }}
}}
"#,
        workers = s
            .worker_processes
            .map_or_else(|| "auto".to_string(), |n| n.to_string()),
        read_timeout = s.read_timeout,
        access_log = match &s.access_log {
            Some(path) => format!("access_log {} course;", quoted(&path.display().to_string())),
            None => "access_log off;".to_string(),
        },
        max_body = s.max_body,
        max_temp_file = s.max_temp_file,
        worker_connections = UPSTREAM_BACKLOG,
        listen = s.listen,
        params = quoted(&s.params_path().display().to_string()),
        method = s.upstream.method_lines(),
        retries = s.upstream.location_lines(),
    )
}
// ANCHOR_END: config_template

/// nginx's stock `uwsgi_params` (Debian's `/etc/nginx/uwsgi_params`), with
/// HTTP_HOST made explicit.
pub fn uwsgi_params() -> String {
    let mut params = String::from(
        "# The variables nginx sends the app with each request, besides one\n\
         # HTTP_* variable per request header. As nginx ships it, plus HTTP_HOST.\n",
    );
    for (name, value) in [
        ("QUERY_STRING", "$query_string"),
        ("REQUEST_METHOD", "$request_method"),
        ("CONTENT_TYPE", "$content_type"),
        ("CONTENT_LENGTH", "$content_length"),
        ("REQUEST_URI", "$request_uri"),
        ("PATH_INFO", "$document_uri"),
        ("DOCUMENT_ROOT", "$document_root"),
        ("SERVER_PROTOCOL", "$server_protocol"),
        ("REQUEST_SCHEME", "$scheme"),
        ("HTTPS", "$https if_not_empty"),
        ("REMOTE_ADDR", "$remote_addr"),
        ("REMOTE_PORT", "$remote_port"),
        ("SERVER_PORT", "$server_port"),
        ("SERVER_NAME", "$server_name"),
    ] {
        let _ = writeln!(params, "uwsgi_param  {name:<18} {value};");
    }
    params.push_str(
        "\n# Not the Host header as the client wrote it ($http_host): the host nginx\n\
         # settled on ($host: from an absolute URL in the request line if there is\n\
         # one, else from Host, lower-cased), with the client's port kept, so the\n\
         # app can build its own URLs. This line replaces the header's HTTP_HOST.\n\
         uwsgi_param  HTTP_HOST          $host$port_in_host;\n",
    );
    params
}

/// A path or word as an nginx argument: quoted when it has characters nginx
/// would read otherwise (spaces, `;`, braces, quotes).
fn quoted(s: &str) -> String {
    if s.chars()
        .any(|c| c.is_whitespace() || matches!(c, ';' | '{' | '}' | '"' | '\'' | '#'))
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s.to_string()
    }
}

/// Creates the run directory with mode 0700, or checks that an existing one
/// is private: the uwsgi socket inside lets anyone who reaches it run the app.
/// With `group` (nginx's workers' group, when they run as another user) the
/// directory is 0710 and belongs to that group: its members may go through
/// it to the socket and the static files, but not list it.
pub fn make_run_dir(dir: &Path, group: Option<u32>) -> Result<(), String> {
    let shown = dir.display();
    let mode = if group.is_some() { 0o710 } else { 0o700 };
    let created = match std::fs::metadata(dir) {
        Err(_) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create the run directory {shown}: {e}")),
        Ok(meta) if !meta.is_dir() => Err(format!(
            "the run directory {shown} exists and is not a directory: choose another --run-dir"
        )),
        Ok(meta) if meta.uid() != nix::unistd::geteuid().as_raw() => Err(format!(
            "the run directory {shown} belongs to another user: choose another --run-dir"
        )),
        Ok(meta) if meta.permissions().mode() & 0o077 & !(mode & 0o070) != 0 => Err(format!(
            "the run directory {shown} is open to other users (mode {:o}): run chmod 700 {shown}, or choose a new --run-dir",
            meta.permissions().mode() & 0o777
        )),
        Ok(_) => Ok(()),
    };
    created?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(dir, None, Some(gid))
            .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)))
            .map_err(|e| format!("cannot give the run directory {shown} to group {gid}: {e}"))?;
    }
    Ok(())
}

/// Writes nginx.conf and uwsgi_params into the run directory.
pub fn write_files(s: &NginxSettings) -> Result<(), String> {
    for (path, text) in [
        (s.conf_path(), nginx_conf(s)),
        (s.params_path(), uwsgi_params()),
        (s.mime_types_path(), MIME_TYPES.to_string()),
    ] {
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// nginx, unprivileged: its prefix and configuration in the run directory,
/// errors on stderr from the first line, in the foreground (whoever starts
/// it is its parent: nginx must not daemonize away from it).
pub fn nginx_command(nginx: &Path, s: &NginxSettings) -> Vec<OsString> {
    vec![
        nginx.into(),
        "-p".into(),
        s.run_dir.clone().into(),
        "-c".into(),
        s.conf_path().into(),
        "-e".into(),
        "stderr".into(),
        "-g".into(),
        "daemon off;".into(),
    ]
}

/// Who nginx's workers run as, when nginx is started by root.
#[derive(Clone, Debug)]
pub struct WorkerUser {
    pub user: String,
    pub group: String,
    pub gid: u32,
}

/// The unprivileged user stage 5 runs nginx's workers as when started by
/// root: `requested` (`USER` or `USER:GROUP`), else `www-data` (Debian's
/// nginx user), else `nobody`. `None` when not root: nginx's workers then
/// run as whoever started it, and need no `user` line.
pub fn unprivileged_user(requested: Option<&str>) -> Result<Option<WorkerUser>, String> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let (name, group) = match requested.map(|r| r.split_once(':').unwrap_or((r, ""))) {
        Some((name, group)) => (Some(name), (!group.is_empty()).then_some(group)),
        None => (None, None),
    };
    let find = |name: &str| nix::unistd::User::from_name(name).ok().flatten();
    let user = match name {
        Some(name) => find(name).ok_or_else(|| {
            format!("there is no user '{name}' on this machine: give --user an existing one")
        })?,
        None => find("www-data").or_else(|| find("nobody")).ok_or_else(|| {
            "neither www-data nor nobody exists: give --user the user nginx's workers should run as"
                .to_string()
        })?,
    };
    let group = match group {
        Some(name) => nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .ok_or_else(|| format!("there is no group '{name}' on this machine"))?,
        None => nix::unistd::Group::from_gid(user.gid)
            .ok()
            .flatten()
            .ok_or_else(|| format!("the group of user {} has no name", user.name))?,
    };
    Ok(Some(WorkerUser {
        user: user.name,
        group: group.name,
        gid: group.gid.as_raw(),
    }))
}

/// The `user` line the test harness's nginx needs when started by root:
/// the current user and its group, by name (its sockets live in private
/// test directories that only this user may enter).
pub fn user_when_root() -> Option<(String, String)> {
    let uid = nix::unistd::geteuid();
    if !uid.is_root() {
        return None;
    }
    let user = nix::unistd::User::from_uid(uid).ok().flatten()?;
    let group = nix::unistd::Group::from_gid(user.gid)
        .ok()
        .flatten()
        .map_or_else(|| user.gid.to_string(), |g| g.name);
    Some((user.name, group))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> NginxSettings {
        NginxSettings {
            run_dir: PathBuf::from("/run/x"),
            listen: "127.0.0.1:8080".parse().unwrap(),
            worker_processes: None,
            static_dir: Some(PathBuf::from("/srv/my site")),
            upstreams: vec!["unix:/run/x/app.sock".into(), "10.0.0.2:3031".into()],
            max_body: 2 << 20,
            read_timeout: 40,
            access_log: Some(PathBuf::from("/dev/stdout")),
            user: Some(("root".into(), "root".into())),
            max_temp_file: 4 << 20,
            files: FileOptions::default(),
            upstream: UpstreamSettings::default(),
        }
    }

    #[test]
    fn the_config_names_everything_in_the_run_directory() {
        let conf = nginx_conf(&settings());
        assert!(conf.contains("\nuser root root;\n"));
        assert!(conf.contains("pid /run/x/nginx.pid;"));
        assert!(conf.contains("client_body_temp_path /run/x/client_body_temp;"));
        assert!(conf.contains("server unix:/run/x/app.sock;\n        server 10.0.0.2:3031;"));
        assert!(conf.contains("alias \"/srv/my site\"/;"));
        assert!(conf.contains("client_max_body_size 2097152;"));
        assert!(conf.contains("client_body_buffer_size 128k;"));
        assert!(conf.contains("uwsgi_read_timeout 40s;"));
        assert!(conf.contains("include /run/x/uwsgi_params;"));
        assert!(conf.contains("access_log /dev/stdout course;"));
        assert!(conf.contains("worker_processes auto;"));
    }

    #[test]
    fn static_files_get_their_types_and_caching_headers() {
        let conf = nginx_conf(&NginxSettings {
            files: FileOptions {
                static_url: "assets".into(),
                static_expires: Some("7d".into()),
                media_dir: Some(PathBuf::from("/srv/uploads")),
                media_url: "/files".into(),
            },
            ..settings()
        });
        assert!(conf.contains("include /run/x/mime.types;"));
        assert!(conf.contains("location /assets/ {\n            alias \"/srv/my site\"/;"));
        assert!(conf.contains("expires 7d;"));
        assert!(conf.contains("location /files/ {\n            alias /srv/uploads/;\n        }"));
        let no_cache = nginx_conf(&NginxSettings {
            files: FileOptions {
                static_expires: None,
                ..FileOptions::default()
            },
            ..settings()
        });
        assert!(no_cache.contains("location /static/ {") && !no_cache.contains("expires"));
        assert!(!no_cache.contains("/media/"));
    }

    #[test]
    fn the_mime_types_cover_what_web_sites_ship() {
        for (ext, ty) in [
            ("css", "text/css"),
            ("js", "text/javascript"),
            ("woff", "font/woff"),
            ("woff2", "font/woff2"),
            ("ttf", "font/ttf"),
            ("map", "application/json"),
            ("svg", "image/svg+xml"),
            ("wasm", "application/wasm"),
        ] {
            let line = MIME_TYPES
                .lines()
                .find(|l| {
                    let l = l.trim().trim_end_matches(';');
                    !l.starts_with('#') && l.split_whitespace().skip(1).any(|e| e == ext)
                })
                .unwrap_or_else(|| panic!("no type for .{ext}"));
            assert_eq!(line.split_whitespace().next(), Some(ty), ".{ext}");
        }
        assert_eq!(url_prefix("static"), "/static/");
        assert_eq!(url_prefix("/s/x/"), "/s/x/");
    }

    #[test]
    fn without_a_static_dir_everything_goes_to_the_app() {
        let conf = nginx_conf(&NginxSettings {
            static_dir: None,
            worker_processes: Some(1),
            ..settings()
        });
        assert!(!conf.contains("/static/"));
        assert!(!conf.contains("mime.types"));
        assert!(conf.contains("worker_processes 1;"));
        assert!(conf.contains("location / {"));
    }

    #[test]
    fn no_user_line_without_root() {
        let conf = nginx_conf(&NginxSettings {
            user: None,
            ..settings()
        });
        assert!(!conf.contains("\nuser "));
    }

    #[test]
    fn upstream_settings_use_nginx_names() {
        let plain = nginx_conf(&settings());
        assert!(!plain.contains("least_conn") && !plain.contains("uwsgi_next_upstream"));
        let conf = nginx_conf(&NginxSettings {
            upstream: UpstreamSettings {
                method: Balance::LeastConn,
                servers: vec![
                    ServerParams {
                        weight: Some(3),
                        max_fails: Some(2),
                        fail_timeout: Some(5),
                        backup: false,
                    },
                    ServerParams {
                        backup: true,
                        ..ServerParams::default()
                    },
                ],
                next_upstream: Some("error timeout http_502".into()),
                next_upstream_tries: Some(2),
                connect_timeout: Some(1),
            },
            ..settings()
        });
        assert!(conf.contains(
            "upstream app {\n        least_conn;\n        server unix:/run/x/app.sock weight=3 max_fails=2 fail_timeout=5s;\n        server 10.0.0.2:3031 backup;\n    }"
        ));
        assert!(conf.contains("            uwsgi_next_upstream error timeout http_502;\n"));
        assert!(conf.contains("            uwsgi_next_upstream_tries 2;\n"));
        assert!(conf.contains("            uwsgi_connect_timeout 1s;\n"));
    }

    #[test]
    fn params_keep_the_stock_lines_and_add_http_host() {
        let params = uwsgi_params();
        assert!(params.contains("uwsgi_param  PATH_INFO          $document_uri;\n"));
        assert!(params.contains("uwsgi_param  HTTP_HOST          $host$port_in_host;\n"));
    }
}
