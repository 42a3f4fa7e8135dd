//! The container image: the `Dockerfile` at the workspace root and the
//! files in `container/`, built and run with podman (or Docker).
//!
//! The image is built once per test run (the first test that needs it
//! builds it; the others wait for it), then each test runs containers of it:
//! stage 5 as the first process, serving the app and `/static/` through
//! nginx and stopping cleanly on `docker stop`; another app from `$APP`; the
//! notes' way, supervisord running nginx and stage 4; and two containers,
//! nginx and the app, sharing the uwsgi socket through a volume.
//!
//! Without a container engine that can run a container here, or without the
//! Debian base image and the means to make it (`scripts/container-base.sh`:
//! root and debootstrap), each test prints one line saying so and passes.
//! `CONTAINER_ENGINE=docker` (or `podman`) chooses the engine.

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use wsgi_course::client;
use wsgi_course::server::repo_root;

/// The images the tests build, from the workspace's Dockerfile: one name
/// per checkout (several worktrees on one machine share the engine's
/// images), e.g. `localhost/wsgi-course-test-1a2b3c4d:latest`.
fn image_name(variant: &str) -> String {
    format!(
        "localhost/wsgi-course-test{variant}-{}:latest",
        checkout_id()
    )
}

/// A short name for this checkout: FNV-1a of its path, stable from run to
/// run. Its images and its cargo target cache (`TARGET_CACHE`) carry it.
fn checkout_id() -> String {
    let path = repo_root().display().to_string();
    let hash = path.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{:08x}", hash as u32)
}

/// The base images the Dockerfile starts from.
const BASES: [&str; 2] = [
    "docker.io/library/debian:trixie",
    "docker.io/library/debian:trixie-slim",
];
/// `docker stop`'s default: after this, SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// The engine

/// podman or docker, with the flags the course machines need (the same as
/// container/containers.conf): runc rather than crun, and limits within
/// the machines' hard limits. Elsewhere they do no harm.
struct Engine {
    program: String,
    /// Before the subcommand: `--runtime runc`.
    global: Vec<String>,
    /// For `run` and `build`: the ulimits.
    limits: Vec<String>,
}

impl Engine {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.global).stdin(Stdio::null());
        cmd
    }

    /// Runs `args`; its output, whatever its status.
    fn output(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.program))
    }

    /// Runs `args`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "{} {} failed ({}):\n{}{}",
            self.program,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn is_podman(&self) -> bool {
        self.program.ends_with("podman")
    }

    fn image_exists(&self, image: &str) -> bool {
        self.output(&["image", "inspect", image]).status.success()
    }
}

/// Whether `program args` runs and exits 0.
fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The first engine that can run containers here, or why there is none.
fn find_engine() -> Result<Engine, String> {
    let wanted = std::env::var("CONTAINER_ENGINE").ok();
    let candidates: Vec<&str> = match wanted.as_deref() {
        Some(name) => vec![name],
        None => vec!["podman", "docker"],
    };
    for &program in &candidates {
        if program.ends_with("podman") {
            let limits = [
                "--ulimit",
                "nofile=4096:4096",
                "--ulimit",
                "nproc=4096:4096",
            ];
            let limits = limits.map(String::from).to_vec();
            if succeeds(program, &["--runtime", "runc", "info"]) {
                let global = vec!["--runtime".into(), "runc".into()];
                return Ok(Engine {
                    program: program.into(),
                    global,
                    limits,
                });
            }
            if succeeds(program, &["info"]) {
                return Ok(Engine {
                    program: program.into(),
                    global: vec![],
                    limits,
                });
            }
        } else if succeeds(program, &["info"]) {
            return Ok(Engine {
                program: program.into(),
                global: vec![],
                limits: vec![],
            });
        }
    }
    Err(format!(
        "no container engine runs here ({} info failed): apt-get install podman runc",
        candidates.join(" info and ")
    ))
}

/// Makes the base images with scripts/container-base.sh when they are
/// missing and this machine can (root, debootstrap); else says why not.
fn ensure_bases(engine: &Engine) -> Result<(), String> {
    if BASES.iter().all(|b| engine.image_exists(b)) {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !succeeds("debootstrap", &["--version"]) {
        return Err("no debian:trixie base image, and no root or debootstrap to make one (run scripts/container-base.sh as root, or pull debian:trixie and debian:trixie-slim)".into());
    }
    eprintln!("making the base images: scripts/container-base.sh");
    let status = Command::new(repo_root().join("scripts/container-base.sh"))
        .env("CONTAINER_ENGINE", &engine.program)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run scripts/container-base.sh: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("scripts/container-base.sh failed ({status})"))
    }
}

/// What every test needs: the engine and the built images.
struct Setup {
    engine: Engine,
    /// The default target: stage 5 as process 1.
    image: String,
    /// `--target supervisord`.
    supervisord_image: String,
}

/// How the one-time setup went.
enum Outcome {
    Ready(Setup),
    /// Containers cannot run here: each test says why, and passes.
    Skip(String),
    /// The image did not build: each test fails with the build's output.
    Failed(String),
}

/// The engine with the images built (once per run), or why the tests are
/// skipped. A build that fails is a failure, not a skip, and is not tried
/// again by every test.
fn setup() -> Option<&'static Setup> {
    static SETUP: OnceLock<Outcome> = OnceLock::new();
    let outcome = SETUP.get_or_init(|| {
        let engine = match find_engine().and_then(|e| ensure_bases(&e).map(|()| e)) {
            Ok(engine) => engine,
            Err(why) => return Outcome::Skip(why),
        };
        let (image, supervisord_image) = (image_name(""), image_name("-supervisord"));
        match build(&engine, "course", &image)
            .and_then(|()| build(&engine, "supervisord", &supervisord_image))
        {
            Ok(()) => Outcome::Ready(Setup {
                engine,
                image,
                supervisord_image,
            }),
            Err(failure) => Outcome::Failed(failure),
        }
    });
    match outcome {
        Outcome::Ready(setup) => Some(setup),
        Outcome::Skip(why) => {
            eprintln!("SKIPPED: {why}");
            None
        }
        Outcome::Failed(failure) => panic!("{failure}"),
    }
}

/// `build --target TARGET -t TAG .` from the workspace root; prints how
/// long it took, or returns the build's last lines.
fn build(engine: &Engine, target: &str, tag: &str) -> Result<(), String> {
    let started = Instant::now();
    let cache = format!("TARGET_CACHE=course-cargo-target-{}", checkout_id());
    let mut args = vec!["build", "--network", "host", "--build-arg", &cache];
    args.extend(engine.limits.iter().map(String::as_str));
    args.extend(["--target", target, "-t", tag, "."]);
    let out = engine
        .command()
        .args(&args)
        .current_dir(repo_root())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", engine.program))?;
    if !out.status.success() {
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return Err(format!(
            "{} {} failed ({}); its last lines:\n{}",
            engine.program,
            args.join(" "),
            out.status,
            last_lines(&log, 40)
        ));
    }
    eprintln!(
        "built {tag} (--target {target}) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------
// Containers

/// A container of this test run, removed (by force) when dropped.
struct Container<'a> {
    engine: &'a Engine,
    name: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self
            .engine
            .command()
            .args(["rm", "-f", "-v", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A name no other test (nor another run) uses.
fn unique(what: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "wsgi-course-test-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl<'a> Container<'a> {
    /// `run -d` with port 80 published on a free loopback port.
    fn run(engine: &'a Engine, what: &str, options: &[&str], image_and_command: &[&str]) -> Self {
        let name = unique(what);
        let mut args = vec!["run", "-d", "--name", &name, "-p", "127.0.0.1::80"];
        args.extend(engine.limits.iter().map(String::as_str));
        args.extend(options);
        args.extend(image_and_command);
        engine.ok(&args);
        Container { engine, name }
    }

    /// Where port 80 is published.
    fn addr(&self) -> SocketAddr {
        let text = self.engine.ok(&["port", &self.name, "80/tcp"]);
        let first = text.lines().next().unwrap_or_default().trim();
        first
            .replace("0.0.0.0", "127.0.0.1")
            .parse()
            .unwrap_or_else(|e| panic!("port {}: {first:?}: {e}", self.name))
    }

    /// Everything the container wrote, stdout and stderr.
    fn logs(&self) -> String {
        let out = self.engine.output(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `ps` inside: (user, command line) of every process.
    fn processes(&self) -> Vec<(String, String)> {
        let text = if self.engine.is_podman() {
            self.engine.ok(&["top", &self.name, "user", "args"])
        } else {
            self.engine.ok(&["top", &self.name, "-o", "uid,args"])
        };
        text.lines()
            .skip(1)
            .filter_map(|line| {
                let line = line.trim();
                let (user, args) = line.split_once(char::is_whitespace)?;
                let user = if user == "0" { "root" } else { user };
                Some((user.to_string(), args.trim().to_string()))
            })
            .collect()
    }

    /// `docker stop` with its default timeout; how long it took.
    fn stop(&self) -> Duration {
        let started = Instant::now();
        let timeout = STOP_TIMEOUT.as_secs().to_string();
        self.engine.ok(&["stop", "-t", &timeout, &self.name]);
        started.elapsed()
    }

    fn state(&self, field: &str) -> String {
        let format = format!("{{{{.State.{field}}}}}");
        self.engine
            .ok(&["inspect", "--format", &format, &self.name])
    }
}

/// GET `path` until an answer comes (nginx and the app start in the
/// container after `run` returns), at most 60 s.
fn get_when_up(addr: SocketAddr, path: &str, logs: impl Fn() -> String) -> client::Response {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client::get(addr, path) {
            Ok(resp) if resp.status != 502 => return resp,
            result if Instant::now() >= deadline => {
                panic!(
                    "no answer at {addr}{path}: {result:?}\nthe logs:\n{}",
                    logs()
                )
            }
            _ => sleep(Duration::from_millis(200)),
        }
    }
}

/// Stops the container as `docker stop` does, and checks it went well:
/// well before the SIGKILL, exit status 0.
fn stop_cleanly(c: &Container) -> String {
    let took = c.stop();
    let logs = c.logs();
    assert_eq!(c.state("Running"), "false");
    assert_eq!(
        c.state("ExitCode"),
        "0",
        "exit status after stop (137: killed)\n{logs}"
    );
    assert!(
        took < STOP_TIMEOUT - Duration::from_secs(2),
        "the stop took {took:?}, near the {STOP_TIMEOUT:?} after which everything is killed\n{logs}"
    );
    eprintln!("{}: stopped in {:.2} s", c.name, took.as_secs_f64());
    logs
}

fn static_index() -> Vec<u8> {
    std::fs::read(repo_root().join("stage5-nginx/static/index.html")).expect("the static site")
}

// ---------------------------------------------------------------------------
// The tests

#[test]
fn the_image_builds_and_its_size_is_reported() {
    let Some(setup) = setup() else { return };
    let e = &setup.engine;
    let size = |image: &str| -> u64 {
        e.ok(&["image", "inspect", "--format", "{{.Size}}", image])
            .parse()
            .expect("a size in bytes")
    };
    let (image, supervisord_image) = (&setup.image, &setup.supervisord_image);
    let (course, supervisord) = (size(image), size(supervisord_image));
    let mb = |bytes: u64| bytes as f64 / 1e6;
    eprintln!(
        "image size: {image} {:.0} MB, {supervisord_image} {:.0} MB (debian:trixie-slim {:.0} MB)",
        mb(course),
        mb(supervisord),
        mb(size(BASES[1]))
    );
    // No compiler, no cargo target directory in it: the slim base, Python,
    // nginx and two binaries.
    assert!(
        course < 250_000_000,
        "{image} is {:.0} MB: did the build stage leak into it?",
        mb(course)
    );
}

#[test]
fn stage5_as_pid_1_serves_the_app_and_static_files_and_stops_cleanly() {
    let Some(setup) = setup() else { return };
    let c = Container::run(&setup.engine, "stage5", &[], &[&setup.image]);
    let addr = c.addr();

    let resp = get_when_up(addr, "/", || c.logs());
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.text(), "Hello, World!\n");
    assert!(
        resp.header("server")
            .is_some_and(|s| s.starts_with("nginx"))
    );
    let resp = client::get(addr, "/static/").expect("GET /static/");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, static_index(), "nginx serves the static site");

    // Stage 5 is process 1; nothing runs as root.
    let procs = c.processes();
    assert!(
        procs
            .first()
            .is_some_and(|(_, args)| args.starts_with("stage5-nginx")),
        "{procs:?}"
    );
    assert!(procs.iter().any(|(_, a)| a.starts_with("nginx: worker")));
    assert!(procs.iter().any(|(_, a)| a.contains("stage4-uwsgi-socket")));
    assert!(procs.iter().all(|(user, _)| user == "app"), "{procs:?}");

    let logs = stop_cleanly(&c);
    // The access log reached the container's output; then each program
    // stopped itself, in order, before process 1 did.
    assert!(logs.contains("\"GET /static/ HTTP/1.1\" 200"), "{logs}");
    let lines: Vec<&str> = logs.lines().collect();
    let line = |found: &dyn Fn(&str) -> bool| lines.iter().rposition(|l| found(l));
    // nginx's master says `exit` last of nginx's processes.
    let nginx_exit = line(&|l| l.contains("[notice]") && l.ends_with(": exit"));
    let stage4_exit = line(&|l| l.contains("Shutting down: Master"));
    let stage5_exit = line(&|l| l.contains("Shutting down: stage5-nginx"));
    assert!(
        nginx_exit.is_some() && stage4_exit.is_some() && stage5_exit.is_some(),
        "{logs}"
    );
    assert!(
        nginx_exit < stage4_exit && stage4_exit < stage5_exit,
        "{logs}"
    );
}

#[test]
fn app_chooses_another_app() {
    let Some(setup) = setup() else { return };
    let c = Container::run(
        &setup.engine,
        "lab",
        &["-e", "APP=apps.lab:app", "-e", "WORKERS=3"],
        &[&setup.image],
    );
    let resp = get_when_up(c.addr(), "/environ", || c.logs());
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(
        resp.text().contains("\"PATH_INFO\": \"/environ\""),
        "{}",
        resp.text()
    );
    let workers = c
        .processes()
        .iter()
        .filter(|(_, a)| a.contains("stage4-uwsgi-socket"))
        .count();
    assert_eq!(workers, 1 + 3, "stage 4's master and 3 workers");
    stop_cleanly(&c);
}

#[test]
fn supervisord_runs_nginx_and_stage4_and_stops_them_cleanly() {
    let Some(setup) = setup() else { return };
    let c = Container::run(
        &setup.engine,
        "supervisord",
        &[],
        &[&setup.supervisord_image],
    );
    let addr = c.addr();
    let resp = get_when_up(addr, "/", || c.logs());
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.text(), "Hello, World!\n");
    assert_eq!(client::get(addr, "/static/").unwrap().body, static_index());

    // supervisord as root, nginx's master as root, its workers as www-data,
    // stage 4 as app: the socket (group www-data, mode 660) between them.
    let procs = c.processes();
    let user_of = |needle: &str| -> Vec<&str> {
        procs
            .iter()
            .filter(|(_, a)| a.contains(needle))
            .map(|(u, _)| u.as_str())
            .collect()
    };
    assert_eq!(user_of("supervisord"), ["root"], "{procs:?}");
    assert_eq!(user_of("nginx: master"), ["root"], "{procs:?}");
    assert!(user_of("nginx: worker").iter().all(|u| *u == "www-data"));
    assert!(user_of("stage4-uwsgi-socket").iter().all(|u| *u == "app"));

    let logs = stop_cleanly(&c);
    // nginx got QUIT (its graceful stop), stage 4 TERM (its graceful stop):
    // both exited by themselves, nothing was killed.
    assert!(logs.contains("signal 3 (SIGQUIT) received"), "{logs}");
    assert!(logs.contains("stopped: nginx (exit status 0)"), "{logs}");
    assert!(logs.contains("stopped: uwsgi (exit status 0)"), "{logs}");
}

/// The two-container setup of container/compose.yaml: with a compose tool
/// when there is one (podman-compose, docker compose), else (or with
/// `CONTAINER_COMPOSE=none`) the same two containers and named volume with
/// plain `run`.
#[test]
fn two_containers_share_one_socket() {
    let Some(setup) = setup() else { return };
    let e = &setup.engine;
    // CONTAINER_COMPOSE=none: the plain `run` way even with a compose tool.
    let no_compose = std::env::var("CONTAINER_COMPOSE").is_ok_and(|v| v == "none");
    let compose: Option<Vec<String>> = if no_compose {
        None
    } else if e.is_podman() {
        succeeds("podman-compose", &["version"]).then(|| {
            let mut cmd = vec!["podman-compose".to_string()];
            if !e.global.is_empty() {
                cmd.push(format!("--podman-args={}", e.global.join(" ")));
            }
            cmd.push(format!("--podman-run-args={}", e.limits.join(" ")));
            cmd
        })
    } else {
        succeeds(&e.program, &["compose", "version"])
            .then(|| vec![e.program.clone(), "compose".into()])
    };
    match compose {
        Some(compose) => two_containers_with_compose(e, &compose, &setup.image),
        None => {
            eprintln!("no compose tool here: the same two containers with plain `run`");
            two_containers_with_run(e, &setup.image);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn two_containers_with_compose(e: &Engine, compose: &[String], image: &str) {
    let project = unique("compose").replace('-', "_");
    let port = free_port();
    let run = |args: &[&str]| -> Output {
        let out = Command::new(&compose[0])
            .args(&compose[1..])
            .args(["-p", &project, "-f", "container/compose.yaml"])
            .args(args)
            .env("IMAGE", image)
            .env("PORT", port.to_string())
            .env("APP", "apps.lab:app")
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .output()
            .expect("the compose tool runs");
        assert!(
            out.status.success(),
            "{} {args:?} failed:\n{}{}",
            compose.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    // Whatever happens, the project's containers, volume and network go.
    struct Down<'a>(&'a Engine, String);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let label = format!("label=com.docker.compose.project={}", self.1);
            let names = self.0.output(&["ps", "-aq", "--filter", &label]);
            for id in String::from_utf8_lossy(&names.stdout).split_whitespace() {
                let _ = self.0.output(&["rm", "-f", id]);
            }
            let _ = self
                .0
                .output(&["volume", "rm", "-f", &format!("{}_uwsgi", self.1)]);
            let _ = self
                .0
                .output(&["network", "rm", &format!("{}_default", self.1)]);
        }
    }
    let _down = Down(e, project.clone());

    run(&["up", "-d"]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let logs = || String::from_utf8_lossy(&run(&["logs"]).stdout).into_owned();
    let resp = get_when_up(addr, "/environ", logs);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.text().contains("\"PATH_INFO\": \"/environ\""));
    assert_eq!(client::get(addr, "/static/").unwrap().body, static_index());

    let label = format!("label=com.docker.compose.project={project}");
    let ids = e.ok(&["ps", "-q", "--filter", &label]);
    assert_eq!(ids.split_whitespace().count(), 2, "two containers");
    let started = Instant::now();
    run(&["stop"]);
    let took = started.elapsed();
    let codes = e.ok(&[
        "ps",
        "-a",
        "--filter",
        &label,
        "--format",
        "{{.Names}} {{.ExitCode}}",
    ]);
    eprintln!("compose stop: {:.2} s; {codes:?}", took.as_secs_f64());
    assert!(took < STOP_TIMEOUT, "compose stop took {took:?}");
    assert!(
        codes.lines().all(|l| l.ends_with(" 0")),
        "both exit 0: {codes}"
    );
}

fn two_containers_with_run(e: &Engine, image: &str) {
    let volume = unique("uwsgi");
    e.ok(&["volume", "create", &volume]);
    struct RmVolume<'a>(&'a Engine, String);
    impl Drop for RmVolume<'_> {
        fn drop(&mut self) {
            let _ = self.0.output(&["volume", "rm", "-f", &self.1]);
        }
    }
    let _rm = RmVolume(e, volume.clone());
    let mount = format!("{volume}:/run/uwsgi");

    let app_name = unique("app");
    let mut args = vec!["run", "-d", "--name", &app_name, "--user", "app"];
    args.extend(e.limits.iter().map(String::as_str));
    args.extend(["-v", &mount, image]);
    args.extend([
        "stage4-uwsgi-socket",
        "--socket=/run/uwsgi/app.sock",
        "--chmod-socket=660",
        "--processes=2",
        "--module=apps.lab:app",
    ]);
    e.ok(&args);
    let app = Container {
        engine: e,
        name: app_name,
    };
    let nginx = Container::run(
        e,
        "nginx",
        &["-v", &mount, "--stop-signal", "SIGQUIT"],
        &[image, "nginx", "-c", "/etc/course/nginx.conf"],
    );
    let addr = nginx.addr();
    let resp = get_when_up(addr, "/environ", || nginx.logs() + &app.logs());
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.text().contains("\"PATH_INFO\": \"/environ\""));
    assert_eq!(client::get(addr, "/static/").unwrap().body, static_index());
    stop_cleanly(&nginx);
    stop_cleanly(&app);
}
