//! The course notes' two real deployments, on the real binaries: the Django
//! site (`apps/django_site`) through stage 3 and behind stage 5's nginx
//! (pages, a form and the admin login with CSRF, the database, static files
//! with their types and caching headers), and the model server
//! (`apps/model_app.py`) through stage 4's HTTP router and stage 5, with the
//! memory `--preload` shares between forked workers.
//!
//! Each test needs Django or scikit-learn; without them it says so in one
//! line and passes (CI installs them).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use wsgi_course::client::{self, Response};
use wsgi_course::server::{ServerProcess, repo_root, workspace_bin};

/// Whether `python3` can import `module`; if not, prints why the test skips.
fn python_has(module: &str, install: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: {module} is not installed (pip install {install})");
    }
    ok
}

fn have_nginx() -> bool {
    if wsgi_course::nginx::nginx_binary().is_some() {
        return true;
    }
    eprintln!("SKIPPED: nginx is not installed (apt-get install nginx)");
    false
}

fn site_dir() -> PathBuf {
    repo_root().join("apps").join("django_site")
}

/// A private directory for one test's database, static files and uploads,
/// removed at the end.
struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> DataDir {
        let dir =
            std::env::temp_dir().join(format!("wsgi-course-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        DataDir(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `python3 manage.py ARGS` with the site's data in `data`.
fn manage(data: &DataDir, args: &[&str], env: &[(&str, &str)]) {
    let out = Command::new("python3")
        .arg("manage.py")
        .args(args)
        .env("DJANGO_DATA_DIR", data.path())
        .envs(env.iter().copied())
        .current_dir(site_dir())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "manage.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A browser's cookie jar, as far as these tests need one.
#[derive(Default)]
struct Cookies(HashMap<String, String>);

impl Cookies {
    fn take(&mut self, r: &Response) {
        for line in r.header_all("set-cookie") {
            if let Some((name, rest)) = line.trim().split_once('=') {
                let value = rest.split(';').next().unwrap_or("");
                self.0.insert(name.to_string(), value.to_string());
            }
        }
    }

    fn header(&self) -> String {
        let pairs: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.join("; ")
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// GET `path` with the jar's cookies; keeps the cookies set.
fn get(addr: SocketAddr, path: &str, jar: &mut Cookies) -> Response {
    let raw = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\nConnection: close\r\n\r\n",
        jar.header()
    );
    let r = client::request(addr, raw.as_bytes()).expect("a response");
    jar.take(&r);
    r
}

/// POST a form (`application/x-www-form-urlencoded`) with the jar's cookies
/// and, as a browser sends it, an `Origin` header: Django's CSRF check
/// compares it with the host the server passed on (with nginx: `$host` and
/// the client's port, see uwsgi_params).
fn post_form(addr: SocketAddr, path: &str, fields: &[(&str, &str)], jar: &mut Cookies) -> Response {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect();
    let body = body.join("&");
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nCookie: {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        jar.header(),
        body.len()
    );
    let r = client::request(addr, raw.as_bytes()).expect("a response");
    jar.take(&r);
    r
}

fn post_json(addr: SocketAddr, path: &str, body: &str) -> Response {
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client::request(addr, raw.as_bytes()).expect("a response")
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The CSRF token Django put in a form.
fn csrf_token(page: &Response) -> String {
    let html = page.text();
    let at = html
        .find("name=\"csrfmiddlewaretoken\" value=\"")
        .expect("the form has a CSRF token");
    let rest = &html[at + "name=\"csrfmiddlewaretoken\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

fn json(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()))
}

/// A running stage 5, stopped with TERM when dropped so that it removes its
/// run directory.
struct Stage5(ServerProcess);

impl Drop for Stage5 {
    fn drop(&mut self) {
        self.0.terminate(Duration::from_secs(20));
    }
}

fn start_stage5(args: &[&str], env: &[(&str, &str)]) -> Stage5 {
    workspace_bin("stage4-uwsgi-socket");
    let mut all = vec!["--listen", "127.0.0.1:0", "--access-log", "off"];
    all.extend_from_slice(args);
    Stage5(
        ServerProcess::start_with("stage5-nginx", &all, env, Some(&repo_root()))
            .expect("stage 5 starts"),
    )
}

/// The form at /notes/new/: GET it (cookie + token), POST a note; without
/// the token Django refuses (403). The note is then in the JSON view.
fn post_a_note(addr: SocketAddr, text: &str) {
    let mut jar = Cookies::default();
    let form = get(addr, "/notes/new/", &mut jar);
    assert_eq!(form.status, 200, "{}", form.text());
    assert!(jar.get("csrftoken").is_some(), "no csrftoken cookie");
    let token = csrf_token(&form);

    let refused = post_form(addr, "/notes/new/", &[("text", text)], &mut jar);
    assert_eq!(refused.status, 403, "a POST without the token is refused");

    let saved = post_form(
        addr,
        "/notes/new/",
        &[("csrfmiddlewaretoken", &token), ("text", text)],
        &mut jar,
    );
    assert_eq!(saved.status, 302, "{}", saved.text());
    let notes = json(&get(addr, "/api/notes/", &mut jar));
    assert_eq!(notes["notes"][0]["text"], text, "{notes}");
    let page = get(addr, "/", &mut jar);
    assert!(page.text().contains(text));
}

#[test]
fn the_django_site_through_stage3() {
    if !python_has("django", "django") {
        return;
    }
    let data = DataDir::new("django3");
    let site = site_dir();
    // A fresh data directory: the site migrates its database at start-up.
    let server = ServerProcess::start_with(
        "stage3-prefork",
        &[
            "mysite.wsgi:application",
            "--chdir",
            site.to_str().unwrap(),
            "-w",
            "2",
            "-b",
            "127.0.0.1:0",
        ],
        &[("DJANGO_DATA_DIR", data.path())],
        None,
    )
    .expect("stage 3 starts");
    let addr = server.addr();

    let fast = client::get(addr, "/fast/").unwrap();
    assert_eq!((fast.status, fast.text().as_str()), (200, "fast\n"));
    let page = client::get(addr, "/").unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.text().contains("/static/notes/style.css"));

    // Reads and writes the database, from either worker.
    let mut jar = Cookies::default();
    let first = json(&get(addr, "/visits/", &mut jar))["visits"]
        .as_i64()
        .unwrap();
    let second = json(&get(addr, "/visits/", &mut jar))["visits"]
        .as_i64()
        .unwrap();
    assert_eq!(second, first + 1);

    post_a_note(addr, "through stage 3");

    // Without DEBUG, an unknown Host is refused (ALLOWED_HOSTS).
    let r = client::request(
        addr,
        b"GET /fast/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 400);
}

#[test]
fn the_django_site_behind_stage5_nginx() {
    if !python_has("django", "django") || !have_nginx() {
        return;
    }
    let data = DataDir::new("django5");
    manage(&data, &["collectstatic", "--noinput"], &[]);
    manage(&data, &["migrate", "--noinput"], &[]);
    manage(
        &data,
        &[
            "createsuperuser",
            "--noinput",
            "--username",
            "admin",
            "--email",
            "admin@example.com",
        ],
        &[("DJANGO_SUPERUSER_PASSWORD", "course-pw-1")],
    );
    let media = data.0.join("media");
    std::fs::create_dir_all(&media).unwrap();
    std::fs::write(media.join("upload.txt"), "an uploaded file\n").unwrap();
    let static_dir = format!("{}/static", data.path());
    let media_dir = media.to_str().unwrap().to_string();
    let server = start_stage5(
        &[
            "mysite.wsgi:application",
            "--chdir",
            "apps/django_site",
            "--static",
            &static_dir,
            "--static-url",
            "/static/",
            "--media",
            &media_dir,
            "-w",
            "2",
        ],
        &[("DJANGO_DATA_DIR", data.path())],
    );
    let addr = server.0.addr();

    // Static files: nginx's, with their type and caching headers.
    let css = client::get(addr, "/static/admin/css/base.css").unwrap();
    assert_eq!(css.status, 200);
    assert!(css.header("server").unwrap().starts_with("nginx"));
    assert_eq!(css.header("content-type"), Some("text/css"));
    assert_eq!(css.header("cache-control"), Some("max-age=3600"));
    assert!(css.header("expires").is_some());
    let js = client::get(addr, "/static/admin/js/core.js").unwrap();
    assert_eq!(js.header("content-type"), Some("text/javascript"));
    let own = client::get(addr, "/static/notes/style.css").unwrap();
    assert_eq!(own.status, 200);
    let upload = client::get(addr, "/media/upload.txt").unwrap();
    assert_eq!(
        (upload.status, upload.text().as_str()),
        (200, "an uploaded file\n")
    );
    assert_eq!(upload.header("content-type"), Some("text/plain"));
    assert!(upload.header("cache-control").is_none());

    // The app's pages, through uwsgi_pass.
    let fast = client::get(addr, "/fast/").unwrap();
    assert_eq!(fast.text(), "fast\n");
    post_a_note(addr, "behind nginx");

    // The admin: its login form, with the CSRF cookie and token, then a
    // page that needs the session, whose style sheet nginx serves.
    let mut jar = Cookies::default();
    let login = get(addr, "/admin/login/?next=/admin/", &mut jar);
    assert_eq!(login.status, 200);
    let token = csrf_token(&login);
    let wrong = post_form(
        addr,
        "/admin/login/",
        &[
            ("csrfmiddlewaretoken", &token),
            ("username", "admin"),
            ("password", "not-the-password"),
            ("next", "/admin/"),
        ],
        &mut jar,
    );
    assert_eq!(wrong.status, 200, "a wrong password shows the form again");
    assert!(jar.get("sessionid").is_none());
    let token = csrf_token(&wrong);
    let ok = post_form(
        addr,
        "/admin/login/",
        &[
            ("csrfmiddlewaretoken", &token),
            ("username", "admin"),
            ("password", "course-pw-1"),
            ("next", "/admin/"),
        ],
        &mut jar,
    );
    assert_eq!(ok.status, 302, "{}", ok.text());
    assert_eq!(ok.header("location"), Some("/admin/"));
    assert!(
        jar.get("sessionid").is_some(),
        "logged in: a session cookie"
    );
    let admin = get(addr, "/admin/", &mut jar);
    assert_eq!(admin.status, 200);
    let html = admin.text();
    assert!(html.contains("Site administration"), "{html}");
    assert!(html.contains("/static/admin/css/base.css"));
    // The notes are in the admin too (a database read of the admin's own).
    let notes = get(addr, "/admin/notes/note/", &mut jar);
    assert!(notes.text().contains("behind nginx"));
}

// ---------------------------------------------------------------------------
// The model server

/// An image of the test set, and what the model says about it.
fn predict_a_sample(addr: SocketAddr) {
    let health = json(&client::get(addr, "/health").unwrap());
    assert_eq!(health["status"], "ok");
    assert!(health["accuracy"].as_f64().unwrap() > 0.9, "{health}");
    let sample = json(&client::get(addr, "/sample?i=3").unwrap());
    let label = sample["label"].as_i64().unwrap();
    let body = serde_json::json!({ "pixels": sample["pixels"] }).to_string();
    let r = post_json(addr, "/predict", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = json(&r);
    assert_eq!(answer["digit"].as_i64(), Some(label), "{answer}");
    let p: f64 = answer["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((p - 1.0).abs() < 0.01, "probabilities sum to {p}");
    let bad = post_json(addr, "/predict", r#"{"pixels": [1, 2]}"#);
    assert_eq!(bad.status, 400);
}

#[test]
fn the_model_server_through_stage4s_http_router() {
    if !python_has("sklearn", "scikit-learn") || !python_has("flask", "flask") {
        return;
    }
    let data = DataDir::new("model4");
    let socket = format!("{}/model.sock", data.path());
    // uwsgi --http :5000 --module app:app --processes 4 --master, on a free port.
    let server = ServerProcess::start(
        "stage4-uwsgi-socket",
        &[
            "--http",
            "127.0.0.1:0",
            "--socket",
            &socket,
            "--module",
            "apps.model_app:app",
            "--processes",
            "4",
            "--master",
        ],
    )
    .expect("stage 4 starts");
    let line = server
        .wait_for_stderr("HTTP router at: http://", Duration::from_secs(10))
        .unwrap();
    let addr = line
        .split("HTTP router at: http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    predict_a_sample(addr);
}

#[test]
fn the_model_server_behind_stage5() {
    if !python_has("sklearn", "scikit-learn") || !python_has("flask", "flask") || !have_nginx() {
        return;
    }
    let server = start_stage5(&["apps.model_app:app", "-w", "2"], &[]);
    let addr = server.0.addr();
    predict_a_sample(addr);
    let health = client::get(addr, "/health").unwrap();
    assert!(health.header("server").unwrap().starts_with("nginx"));
}

/// The master's and workers' memory, from stage 3's stats server.
fn stats(server: &ServerProcess) -> Value {
    let line = server
        .wait_for_stderr("Stats server at: ", Duration::from_secs(10))
        .expect("the banner names the stats address");
    let addr: SocketAddr = line
        .split("Stats server at: ")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    json(&client::get(addr, "/").expect("the stats server answers"))
}

/// The workers' PSS (KiB) once every one of them has loaded the app: their
/// RSS has stopped growing for a second.
fn settled_worker_pss(server: &ServerProcess, workers: usize) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let rss = |s: &Value| -> Vec<u64> {
        s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["rss_kib"].as_u64().unwrap_or(0))
            .collect()
    };
    let mut before = rss(&stats(server));
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = stats(server);
        let after = rss(&now);
        let settled = after.len() == workers
            && before.len() == workers
            && before
                .iter()
                .zip(&after)
                .all(|(b, a)| b.abs_diff(*a) * 100 <= *a)
            && after.iter().all(|kib| *kib > 50 * 1024);
        if settled {
            return now["workers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["pss_kib"].as_u64().unwrap())
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "the workers' memory never settled: {now}"
        );
        before = after;
    }
}

#[test]
fn preload_shares_the_models_memory_between_workers() {
    if !python_has("sklearn", "scikit-learn") || !python_has("flask", "flask") {
        return;
    }
    if !Path::new("/proc/self/smaps_rollup").exists() {
        eprintln!("SKIPPED: no /proc/PID/smaps_rollup here (PSS is Linux's)");
        return;
    }
    let mut mean = Vec::new();
    for preload in [false, true] {
        let mut args = vec![
            "apps.model_app:app",
            "-w",
            "3",
            "-b",
            "127.0.0.1:0",
            "--stats",
            "127.0.0.1:0",
        ];
        if preload {
            args.push("--preload");
        }
        let server = ServerProcess::start("stage3-prefork", &args).expect("stage 3 starts");
        predict_a_sample(server.addr());
        let pss = settled_worker_pss(&server, 3);
        eprintln!("preload={preload}: workers' PSS {pss:?} KiB");
        mean.push(pss.iter().sum::<u64>() / pss.len() as u64);
    }
    // Without preload each worker imported numpy, scikit-learn and Flask
    // and trained the model itself; with it, they share the master's pages.
    // Measured: about 107 MiB against 29 MiB. The check leaves room.
    assert!(
        mean[1] * 4 < mean[0] * 3,
        "with --preload a worker's PSS ({} KiB) should be well below without ({} KiB)",
        mean[1],
        mean[0]
    );
}
