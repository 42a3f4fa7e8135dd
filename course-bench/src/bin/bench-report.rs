//! Turns the last benchmark run into the book's results page.
//!
//! ```text
//! cargo bench --bench stages && cargo bench --bench bridge
//! cargo run --release --bin bench-report      # writes book/src/results.md and results.svg
//! ```
//!
//! Reads `target/bench-results.json` (left by `benches/stages.rs`: latency,
//! CPU time, memory) and criterion's estimates in `target/criterion/`
//! (requests per second, and the bridge benchmark's nanoseconds).

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Parser;
use course_bench::chart::{Bar, Chart, Panel};
use course_bench::measurement::NOISY_CORES;
use course_bench::results::{by_key, criterion_estimate, results_path};
use serde_json::Value;
use wsgi_course::server::repo_root;

/// Write the book's results page from the last `cargo bench --bench stages`.
#[derive(Parser, Debug)]
#[command(name = "bench-report")]
struct Args {
    /// The summary the stages benchmark wrote [default: target/bench-results.json].
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,

    /// The page to write [default: book/src/results.md]; the plot goes next
    /// to it, as results.svg.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    let input = args.input.unwrap_or_else(results_path);
    let out = args
        .out
        .unwrap_or_else(|| repo_root().join("book/src/results.md"));
    let text = match std::fs::read_to_string(&input) {
        Ok(t) => t,
        Err(e) => {
            // No run to report: redraw the chart from the page's numbers.
            redraw_from_page(&out, &input, &e);
            return;
        }
    };
    let doc: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{} is not the benchmark's JSON: {e}", input.display());
            std::process::exit(1);
        }
    };
    let report = Report::new(&doc);
    let svg_path = out.with_extension("svg");
    let svg_name = svg_path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "results.svg".into());
    let page = report.markdown(&svg_name);
    let svg = report.chart().svg();
    for (path, content) in [(&out, page), (&svg_path, svg)] {
        if let Err(e) = std::fs::write(path, content) {
            eprintln!("cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
        println!("wrote {}", path.display());
    }
}

/// Without a benchmark run to report, redraws `results.svg` from the
/// numbers already on the results page (the page itself is left as it is).
fn redraw_from_page(page_path: &std::path::Path, input: &std::path::Path, why: &std::io::Error) {
    let page = match std::fs::read_to_string(page_path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "cannot read {} ({why}) nor {} ({e}): run `cargo bench --bench stages` first",
                input.display(),
                page_path.display()
            );
            std::process::exit(1);
        }
    };
    let chart = Chart::from_page(&page);
    if chart.panels.is_empty() {
        eprintln!(
            "{} has no results tables to draw: run `cargo bench --bench stages` first",
            page_path.display()
        );
        std::process::exit(1);
    }
    let svg_path = page_path.with_extension("svg");
    if let Err(e) = std::fs::write(&svg_path, chart.svg()) {
        eprintln!("cannot write {}: {e}", svg_path.display());
        std::process::exit(1);
    }
    println!(
        "no {} ({why}): redrew {} from the numbers in {}",
        input.display(),
        svg_path.display(),
        page_path.display()
    );
}

/// One measured (workload, server) pair.
struct Row<'a> {
    server: &'a Value,
    result: &'a Value,
    /// Requests per second: criterion's estimate, else the load generator's.
    rps: f64,
    /// Criterion's 95% confidence interval, in requests per second.
    interval: Option<(f64, f64)>,
}

struct Report<'a> {
    doc: &'a Value,
    servers: Vec<&'a Value>,
    /// Workload id -> rows in the order of the servers.
    rows: Vec<(&'a Value, Vec<Row<'a>>)>,
}

impl<'a> Report<'a> {
    fn new(doc: &'a Value) -> Report<'a> {
        let list = |key: &str| doc[key].as_array().map_or(&[][..], |v| v.as_slice());
        let servers: Vec<&Value> = list("servers").iter().collect();
        let by_workload = by_key(list("results"), "workload");
        let mut rows = Vec::new();
        for w in list("workloads") {
            let id = w["id"].as_str().unwrap_or("");
            let Some(measured) = by_workload.get(id) else {
                continue;
            };
            let mut list = Vec::new();
            for s in &servers {
                let sid = s["id"].as_str().unwrap_or("");
                let Some(result) = measured.iter().find(|r| r["server"] == sid) else {
                    continue;
                };
                let (rps, interval) = match criterion_estimate(id, sid) {
                    // ns per request; the interval's ends swap when inverted.
                    Some((ns, lo, hi)) if ns > 0.0 => (1e9 / ns, Some((1e9 / hi, 1e9 / lo))),
                    _ => (result["rps"].as_f64().unwrap_or(0.0), None),
                };
                list.push(Row {
                    server: s,
                    result,
                    rps,
                    interval,
                });
            }
            rows.push((w, list));
        }
        Report { doc, servers, rows }
    }

    fn row(&self, workload: &str, server: &str) -> Option<&Row<'a>> {
        self.rows
            .iter()
            .find(|(w, _)| w["id"] == workload)?
            .1
            .iter()
            .find(|r| r.server["id"] == server)
    }

    fn machine_line(&self) -> String {
        let m = &self.doc["machine"];
        let s = &self.doc["settings"];
        format!(
            "{} on {} cores ({}), Linux {}, Python {}. {} concurrent connections; \
             prefork servers with {} workers, threaded ones with {} threads per process{}.",
            m["date"].as_str().unwrap_or("?"),
            m["cores"],
            m["cpu"].as_str().unwrap_or("?"),
            m["kernel"].as_str().unwrap_or("?"),
            m["python"].as_str().unwrap_or("?"),
            s["connections"],
            s["workers"],
            s["threads"],
            if s["quick"].as_bool() == Some(true) {
                "; quick mode (short runs). Whole runs can differ by 10-20% from one to the next (they did on this machine), and not all servers alike: compare servers within one run"
            } else {
                ""
            }
        )
    }

    fn markdown(&self, svg_name: &str) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Results: every server, side by side\n");
        let _ = writeln!(
            md,
            "<!-- Written by `cargo run --release --bin bench-report` from the last \
             `cargo bench --bench stages` (and `--bench bridge`). Edit the generator \
             (course-bench/src/bin/bench-report.rs), not this file. -->\n"
        );
        let _ = writeln!(md, "Measured {}\n", self.machine_line());
        let _ = writeln!(
            md,
            "To measure your machine (the numbers below are this one's; on yours they will \
             differ, but the ratios should not much):\n\n\
             ```console\n\
             $ cargo bench --bench stages            # everything, full-length runs\n\
             $ BENCH_QUICK=1 cargo bench --bench stages   # the short version, about 5 minutes here\n\
             $ cargo bench --bench bridge            # one request without the network\n\
             $ cargo run --release --bin bench-report     # rewrites this page\n\
             ```\n\n\
             Criterion's own report, with the distribution of every measurement, is in \
             `target/criterion/report/index.html` (the quick mode leaves criterion's plots \
             out: drawing them takes longer than measuring). `BENCH_CONNECTIONS`, `BENCH_WORKERS` and \
             `BENCH_THREADS` change the concurrency and the shape of the servers; \
             `cargo bench --bench stages -- hello/` runs one workload, `-- stage3` one server.\n"
        );
        let _ = writeln!(md, "![Requests per second, per workload]({svg_name})\n");
        self.servers_section(&mut md);
        self.tables(&mut md);
        self.targets(&mut md);
        self.reading(&mut md);
        self.method(&mut md);
        md
    }

    fn servers_section(&self, md: &mut String) {
        let _ = writeln!(md, "## The servers\n");
        let _ = writeln!(
            md,
            "| server | version | processes and threads | connections |"
        );
        let _ = writeln!(md, "|---|---|---|---|");
        for s in &self.servers {
            // `gunicorn (version 23.0.0)`, `granian 2.8.7`, `2.0.30`: the number.
            let version = s["version"]
                .as_str()
                .and_then(|v| {
                    v.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
                        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
                })
                .unwrap_or("this tree");
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                s["title"].as_str().unwrap_or(""),
                version,
                s["shape"].as_str().unwrap_or(""),
                if s["keeps_alive"].as_bool() == Some(true) {
                    "kept alive"
                } else {
                    "closed after each response"
                }
            );
        }
        if let Some(skipped) = self.doc["skipped"].as_array().filter(|a| !a.is_empty()) {
            let list: Vec<String> = skipped
                .iter()
                .map(|s| {
                    format!(
                        "{} ({}{})",
                        s["title"].as_str().unwrap_or(""),
                        s["reason"].as_str().unwrap_or(""),
                        s["install"]
                            .as_str()
                            .filter(|i| !i.is_empty())
                            .map(|i| format!(": `{i}`"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            let _ = writeln!(md, "\nNot in this run: {}.", list.join("; "));
        }
        let _ = writeln!(md);
    }

    fn tables(&self, md: &mut String) {
        let _ = writeln!(md, "## The numbers\n");
        let _ = writeln!(
            md,
            "Requests per second are criterion's estimate, ± its 95% confidence interval; \
             latency percentiles, CPU time and memory come from the \
             load generator's runs of the same measurement. *CPU per request* is the \
             server's CPU time (all its processes and threads, user and system) divided \
             by the requests; *load generator* is the share of the cores the client itself \
             used meanwhile: it runs on the same machine. *RSS* is the resident memory of \
             each worker process after the run; *PSS* counts the pages a worker shares with \
             other processes (its master's, after fork) for their share only. In the \
             WebSocket table, a *message* is one 16-byte text message and its echo, \
             its latency the round trip.\n"
        );
        let mut noisy = Vec::new();
        for (w, rows) in &self.rows {
            let _ = writeln!(md, "### {}\n", w["about"].as_str().unwrap_or(""));
            // WebSocket messages are compared with uvicorn's: no WSGI
            // server speaks WebSocket.
            let messages = w["unit"] == "messages";
            let (base_id, base_name) = if messages {
                ("uvicorn", "uvicorn")
            } else {
                ("gunicorn-sync", "gunicorn sync")
            };
            let baseline = rows.iter().find(|r| r.server["id"] == base_id);
            let (rate, per) = if messages {
                ("messages/s", "message")
            } else {
                ("req/s", "request")
            };
            let _ = writeln!(
                md,
                "| server | {rate} | vs {base_name} | p50 | p99 | CPU per {per} | load generator | RSS per worker |"
            );
            let _ = writeln!(md, "|---|--:|--:|--:|--:|--:|--:|--:|");
            for r in rows {
                let j = r.result;
                let errors = j["errors"].as_u64().unwrap_or(0);
                // Criterion's 95% interval, as a +- of the estimate.
                let spread = r
                    .interval
                    .filter(|_| r.rps > 0.0)
                    .map(|(lo, hi)| format!(" ±{:.0}%", (hi - lo) / 2.0 / r.rps * 100.0))
                    .unwrap_or_default();
                let loadgen = j["loadgen_cores"].as_f64().unwrap_or(0.0);
                let others = j["other_cores"].as_f64().unwrap_or(0.0);
                let mark = if others > NOISY_CORES {
                    noisy.push(others);
                    " †"
                } else {
                    ""
                };
                let _ = writeln!(
                    md,
                    "| {}{mark} | {}{spread}{} | {} | {} | {} | {} | {loadgen:.2} cores | {} |",
                    r.server["title"].as_str().unwrap_or(""),
                    thousands(r.rps),
                    if errors > 0 {
                        format!(" ({errors} errors)")
                    } else {
                        String::new()
                    },
                    baseline
                        .filter(|b| b.rps > 0.0)
                        .map(|b| format!("{:.1}x", r.rps / b.rps))
                        .unwrap_or_else(|| "-".into()),
                    millis(j["p50_us"].as_f64()),
                    millis(j["p99_us"].as_f64()),
                    micros(j["server_cpu_us_per_request"].as_f64()),
                    rss(&j["rss_kib_per_worker"], &j["pss_kib_per_worker"]),
                );
            }
            let _ = writeln!(md);
        }
        self.idle_table(md);
        if let Some(worst) = noisy.iter().copied().reduce(f64::max) {
            let _ = writeln!(
                md,
                "† Other programs kept the machine busy during this measurement (up to \
                 {worst:.2} cores besides the server and the load generator): its numbers \
                 are disturbed. Measure again on a quiet machine.\n"
            );
        }
    }

    /// The idle keep-alive connections of each server, measured once.
    fn idle(&self) -> Vec<(&'a Value, &'a Value)> {
        let rows = self.doc["idle"]
            .as_array()
            .map_or(&[][..], |v| v.as_slice());
        self.servers
            .iter()
            .filter_map(|s| Some((*s, rows.iter().find(|r| r["server"] == s["id"])?)))
            .collect()
    }

    /// Bytes of RSS per idle connection, of one server.
    fn idle_bytes(&self, server: &str) -> Option<f64> {
        self.idle()
            .into_iter()
            .find(|(s, _)| s["id"] == server)
            .and_then(|(_, r)| r["bytes_per_connection"].as_f64())
    }

    fn idle_table(&self, md: &mut String) {
        let rows = self.idle();
        let Some((_, first)) = rows.first() else {
            return;
        };
        let _ = writeln!(
            md,
            "### Memory per idle keep-alive connection ({} connections)\n",
            thousands(first["connections"].as_f64().unwrap_or(0.0))
        );
        let _ = writeln!(
            md,
            "Each connection sent one `GET /` with keep-alive, read the response and stayed \
             open, idle. *Per connection* is the RSS the server's workers (summed) gained, \
             divided by the connections still open when it was read. Measured once per \
             server, not by criterion: expect a few hundred bytes of noise.\n"
        );
        let _ = writeln!(
            md,
            "| server | per connection | connections open | RSS before | RSS after |"
        );
        let _ = writeln!(md, "|---|--:|--:|--:|--:|");
        for (s, r) in rows {
            let mib = |k: &str| r[k].as_f64().unwrap_or(0.0) / 1024.0;
            let _ = writeln!(
                md,
                "| {} | {:.1} KiB | {} of {} | {:.1} MiB | {:.1} MiB |",
                s["title"].as_str().unwrap_or(""),
                r["bytes_per_connection"].as_f64().unwrap_or(0.0) / 1024.0,
                thousands(r["open"].as_f64().unwrap_or(0.0)),
                thousands(r["connections"].as_f64().unwrap_or(0.0)),
                mib("rss_before_kib"),
                mib("rss_after_kib"),
            );
        }
        let _ = writeln!(md);
    }

    /// Stage 6's targets (issue 18): `-k asgi` (2 workers) against uvicorn
    /// and granian's ASGI interface, same run.
    fn asgi_targets(&self, md: &mut String, mark: &dyn Fn(bool) -> &'static str) {
        let rps = |w: &str, id: &str| self.row(w, id).map(|r| r.rps);
        for (peer, at_least) in [("uvicorn", 1.3), ("granian-asgi", 1.5)] {
            if let (Some(v), Some(p)) = (rps("hello", "stage3-asgi"), rps("hello", peer)) {
                let x = v / p;
                let _ = writeln!(
                    md,
                    "| stage3-asgi, hello: at least {at_least}x {peer} | {x:.2}x ({} vs {} req/s) | {} |",
                    thousands(v),
                    thousands(p),
                    mark(x >= at_least)
                );
            }
        }
        if let (Some(v), Some(p)) = (rps("wsecho", "stage3-asgi"), rps("wsecho", "uvicorn")) {
            let x = v / p;
            // What the null server, with no Python, reaches against the
            // same uvicorn run: the most any server could show here.
            let bound = rps("wsecho", "null")
                .map(|n| format!("; the null server, no Python: {:.2}x", n / p))
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "| stage3-asgi, WebSocket echo: at least 2x uvicorn | {x:.2}x ({} vs {} messages/s{bound}) | {} |",
                thousands(v),
                thousands(p),
                mark(x >= 2.0)
            );
        }
        if let (Some(v), Some(p)) = (self.idle_bytes("stage3-asgi"), self.idle_bytes("uvicorn")) {
            let _ = writeln!(
                md,
                "| stage3-asgi, memory per idle connection: at most uvicorn's | {:.1} KiB vs {:.1} KiB | {} |",
                v / 1024.0,
                p / 1024.0,
                mark(v <= p)
            );
        }
        // The null server (no Python: course-bench/src/bin/null-server.rs)
        // is what this machine and load generator allow at all.
        for w in ["hello", "io256", "wsecho"] {
            if let (Some(v), Some(null)) = (rps(w, "stage3-asgi"), rps(w, "null")) {
                let peers: Vec<String> = ["uvicorn", "granian-asgi"]
                    .iter()
                    .filter_map(|p| rps(w, p).map(|r| format!("{p} {:.0}%", r / null * 100.0)))
                    .collect();
                let unit = if w == "wsecho" { "messages/s" } else { "req/s" };
                let _ = writeln!(
                    md,
                    "| stage3-asgi, {w}: closer to the null server's (no Python, {} {unit}: the bound here) than the peers | {:.0}% ({}) | {} |",
                    thousands(null),
                    v / null * 100.0,
                    peers.join(", "),
                    mark(
                        ["uvicorn", "granian-asgi"]
                            .iter()
                            .all(|p| rps(w, p).is_none_or(|r| v >= r))
                    )
                );
            }
        }
        if let Some(v) = rps("io256", "stage3-asgi") {
            // 256 connections each waiting 10 ms: at most 25,600 a second.
            let share = v / 25_600.0;
            let _ = writeln!(
                md,
                "| stage3-asgi, `/io?ms=10` with 256 connections: at least 90% of the sleep bound (25,600/s) | {:.0}% ({} req/s) | {} |",
                share * 100.0,
                thousands(v),
                mark(share >= 0.9)
            );
            for peer in ["uvicorn", "granian-asgi"] {
                if let Some(p) = rps("io256", peer) {
                    let _ = writeln!(
                        md,
                        "| stage3-asgi, `/io?ms=10` with 256 connections: at least as fast as {peer} | {:.2}x ({} vs {} req/s) | {} |",
                        v / p,
                        thousands(v),
                        thousands(p),
                        mark(v >= p)
                    );
                }
            }
        }
    }

    /// The course's targets, checked against this run.
    fn targets(&self, md: &mut String) {
        let _ = writeln!(md, "## The targets\n");
        let _ = writeln!(
            md,
            "What the course's servers must achieve, as ratios measured in this one run \
             (the machine is shared and noisy; ratios from one run are what holds).\n"
        );
        let _ = writeln!(md, "| target | measured | |");
        let _ = writeln!(md, "|---|---|---|");
        let mark = |ok: bool| if ok { "met" } else { "**missed**" };

        let hello = |id: &str| self.row("hello", id).map(|r| r.rps);
        if let Some(gsync) = hello("gunicorn-sync") {
            for id in ["stage3-sync", "stage3-gthread"] {
                if let Some(v) = hello(id) {
                    let x = v / gsync;
                    let _ = writeln!(
                        md,
                        "| {id}, hello: at least 5x gunicorn sync | {x:.1}x ({} vs {} req/s) | {} |",
                        thousands(v),
                        thousands(gsync),
                        mark(x >= 5.0)
                    );
                }
            }
        }
        if let Some(granian) = hello("granian") {
            for id in ["stage3-gthread", "stage3-sync"] {
                if let Some(v) = hello(id) {
                    let x = v / granian;
                    // granian keeps connections alive: only the gthread
                    // worker is measured on the same terms.
                    let verdict = if id == "stage3-sync" {
                        "not comparable: closes each connection"
                    } else {
                        mark(x >= 1.0)
                    };
                    let _ = writeln!(
                        md,
                        "| {id}, hello: at least as fast as granian | {x:.2}x ({} vs {} req/s) | {verdict} |",
                        thousands(v),
                        thousands(granian),
                    );
                }
            }
        }
        self.asgi_targets(md, &mark);
        // Behind the same nginx, the app server is the only difference.
        if let (Some(ours), Some(uwsgi)) = (hello("stage4-nginx"), hello("uwsgi-socket")) {
            let x = ours / uwsgi;
            let _ = writeln!(
                md,
                "| stage4-nginx, hello: at least 1.5x uWSGI --socket behind the same nginx | {x:.2}x ({} vs {} req/s) | {} |",
                thousands(ours),
                thousands(uwsgi),
                mark(x >= 1.5)
            );
        }
        if let Some((ceiling, cpu_ms)) = self.cpu_ceiling() {
            for r in self
                .rows
                .iter()
                .filter(|(w, _)| w["id"] == "cpu")
                .flat_map(|(_, r)| r)
            {
                let id = r.server["id"].as_str().unwrap_or("");
                if r.server["family"] != "course" || !is_prefork(id) {
                    continue;
                }
                let x = r.rps / ceiling;
                let _ = writeln!(
                    md,
                    "| {id}, /cpu: within 10% of the ceiling ({} cores / {cpu_ms:.3} ms = {} req/s) | {:.0}% ({} req/s) | {} |",
                    self.doc["machine"]["cores"],
                    thousands(ceiling),
                    x * 100.0,
                    thousands(r.rps),
                    mark(x >= 0.9)
                );
            }
        }
        self.bridge_target(md);
    }

    /// The bridge's own target (one request inside a worker), from the
    /// bridge benchmark, with its parts below the table.
    fn bridge_target(&self, md: &mut String) {
        let mark = |ok: bool| if ok { "met" } else { "**missed**" };
        if let Some((inside, floor, parts)) = bridge_costs() {
            let x = inside / floor;
            let _ = writeln!(
                md,
                "| one request inside a worker (`serve_one` minus the socket calls): within 2x of the bare Python call | {x:.2}x ({inside:.0} ns vs {floor:.0} ns) | {} |",
                mark(x <= 2.0)
            );
            let _ = writeln!(
                md,
                "\nThe bridge benchmark (`cargo bench --bench bridge`, hello app, no network): {parts}.\n"
            );
        } else {
            let _ = writeln!(
                md,
                "\n(`cargo bench --bench bridge` has not been run: no per-request cost inside a worker.)\n"
            );
        }
    }

    /// The most `/cpu` requests per second the machine can serve: its cores
    /// divided by the CPU time of one request, as stage 1 measured it (one
    /// thread: nothing but the request itself runs).
    fn cpu_ceiling(&self) -> Option<(f64, f64)> {
        let cores = self.doc["machine"]["cores"].as_f64()?;
        let rows = &self.rows.iter().find(|(w, _)| w["id"] == "cpu")?.1;
        let per_request_us = rows
            .iter()
            .find(|r| r.server["id"] == "stage1")
            .and_then(|r| r.result["server_cpu_us_per_request"].as_f64())
            .filter(|v| *v > 0.0)?;
        Some((cores * 1e6 / per_request_us, per_request_us / 1000.0))
    }

    /// What the numbers say, and which comparisons are fair.
    fn reading(&self, md: &mut String) {
        let value = |w: &str, server: &str, key: &str| {
            self.row(w, server).and_then(|r| r.result[key].as_f64())
        };
        let _ = writeln!(md, "## Reading the numbers\n");
        let _ = writeln!(
            md,
            "**Which comparisons are fair.** A server that closes the connection after each \
             response (every sync worker: stage 1, stage 3 sync, gunicorn sync; and uWSGI's \
             HTTP router) makes the client open a new TCP connection for every request: a \
             handshake, a teardown and a fresh `accept`, in the kernel of the same cores, for \
             14 bytes of body. Servers that keep connections alive (stage 2, stage 3 gthread, \
             gunicorn gthread, granian) skip all that. So compare like with like: stage 3 sync \
             with gunicorn sync (the same design, one in Rust, one in Python), stage 3 gthread \
             with gunicorn gthread and granian. Across the two kinds, the hello row measures \
             TCP more than the servers.\n"
        );
        let sync_client = value("hello", "stage3-sync", "loadgen_cpu_us_per_request");
        let sync_cores = value("hello", "stage3-sync", "loadgen_cores");
        let kept_client = value("hello", "stage3-gthread", "loadgen_cpu_us_per_request");
        let kept_cores = value("hello", "stage3-gthread", "loadgen_cores");
        if let (Some(sc), Some(scores), Some(kc), Some(kcores)) =
            (sync_client, sync_cores, kept_client, kept_cores)
        {
            let _ = writeln!(
                md,
                "**The load generator shares the machine.** It runs on the same cores as the \
                 server, on one thread. Against stage 3 gthread it used {kcores:.2} of the cores, \
                 {kc:.0} µs of CPU per request; against stage 3 sync {scores:.2} cores, {sc:.0} µs \
                 per request, most of it opening and closing a connection. That is why the sync \
                 servers cannot go much faster here: the client's one thread is saturated, and \
                 even a server that cost nothing would see at most about {} requests a second \
                 from it. The fastest keep-alive servers are limited by the cores they share \
                 with their client: compare what the servers themselves cost in the *CPU per \
                 request* column.\n",
                thousands(1e6 / sc)
            );
        }
        let ours = value("hello", "stage4-nginx", "server_cpu_us_per_request");
        let ours_front = value("hello", "stage4-nginx", "front_cpu_us_per_request");
        let uwsgi = value("hello", "uwsgi-socket", "server_cpu_us_per_request");
        let uwsgi_front = value("hello", "uwsgi-socket", "front_cpu_us_per_request");
        if let (Some(o), Some(of), Some(u), Some(uf)) = (ours, ours_front, uwsgi, uwsgi_front)
            && of > 0.0
            && uf > 0.0
        {
            let _ = writeln!(
                md,
                "**Behind nginx, nginx sets the pace.** For one hello request, nginx used \
                 {of:.0} µs of CPU in front of stage 4 and {uf:.0} µs in front of uWSGI; the \
                 workers behind it {:.0} µs (stage 4) and {:.0} µs (uWSGI), for the \
                 `accept`, the packet, Python and the `close`. nginx and the workers share the \
                 same cores, so the pair serves about *cores / (nginx + workers)*: an app \
                 server that cost nothing at all would be at most {:.2}x faster than uWSGI \
                 here. Which is the lesson of stage 5: once nginx is in front, make the app \
                 cheaper, not the app server.\n",
                o - of,
                u - uf,
                u / uf,
            );
        }
        let _ = writeln!(
            md,
            "**`/cpu` is bound by the cores and the GIL.** 1 ms of Python per request can be \
             served at most *cores / CPU time per request* times a second. Stage 1 and \
             stage 2 have one process, so one GIL: one core's worth at most, whatever the \
             threads. The prefork servers run one interpreter per worker and reach the \
             ceiling; threads inside a worker add nothing to it, only the latency of waiting \
             for the GIL (see the p99 of the gthread servers).\n"
        );
        let _ = writeln!(
            md,
            "**`/io` is bound by how many requests can wait at once.** A sleeping request \
             holds a thread (stage 2: {threads} threads, {threads} sleeps at a time; stage 3 \
             gthread: {workers} x {threads}), or a whole process (sync workers: {workers} at a \
             time), or, in granian, one of its blocking threads, of which it starts many.\n",
            threads = self.doc["settings"]["threads"],
            workers = self.doc["settings"]["workers"],
        );
        let _ = writeln!(
            md,
            "**Memory.** RSS counts every page a worker touches, including the pages it \
             shares with its master after fork (the interpreter, the app): adding the \
             workers' RSS overstates the total. PSS shares those pages out.\n"
        );
    }

    /// How a number of the tables is taken.
    fn method(&self, md: &mut String) {
        let _ = writeln!(md, "## How it is measured\n");
        let _ = writeln!(
            md,
            "`course-bench/benches/stages.rs` starts every server once, with `apps/lab.py` (the workloads \
             are its routes), and keeps it running. For each workload and server, criterion \
             warms up, then takes 10 samples. A sample is one run of the course's load \
             generator (`loadgen/`) from the benchmark's thread: {connections} \
             connections, each sending its next request as soon as the previous response has \
             arrived, for a fixed time (at least {min_run}, and at least {rounds} rounds of the \
             connections, so that queues are in their steady state). The requests completed \
             in that time give the time per request criterion records; the ones cut off at \
             the end are not counted, and the server is given the time to finish them before \
             the next sample. Server CPU time is read from `/proc` for the server's whole \
             process tree, the load generator's with `getrusage`. A sample during which other \
             programs used more than a quarter of a core is taken again once the machine is \
             quiet (rows still disturbed are marked).\n",
            connections = self.doc["settings"]["connections"],
            rounds = if self.doc["settings"]["quick"].as_bool() == Some(true) {
                "two"
            } else {
                "three"
            },
            min_run = if self.doc["settings"]["quick"].as_bool() == Some(true) {
                "0.15 s"
            } else {
                "0.5 s"
            },
        );
        let _ = writeln!(
            md,
            "The WebSocket echo is measured the same way, with {connections} WebSocket clients \
             (`course-bench/src/websocket.rs`, on two threads of the benchmark's process) in place of the load \
             generator: each sends a 16-byte text message to `/ws` of `apps/asgi_lab.py` and \
             waits for its echo; a sample counts the echoes. The memory per idle connection \
             (`course-bench/src/idle.rs`) is not a criterion benchmark: after the timed \
             workloads, each ASGI server is sent `GET /` on {idle} keep-alive connections \
             (64 being opened at a time), which then stay open, and the RSS of its workers \
             is read before and 0.3 s after.\n",
            connections = self.doc["settings"]["connections"],
            idle = thousands(
                self.doc["settings"]["idle_connections"]
                    .as_f64()
                    .unwrap_or(10_000.0)
            ),
        );
    }

    /// The chart: requests per second, one panel per workload.
    fn chart(&self) -> Chart {
        let panels = self
            .rows
            .iter()
            .filter(|(_, rows)| !rows.is_empty())
            .map(|(w, rows)| Panel {
                title: w["about"].as_str().unwrap_or("").replace('`', ""),
                bars: rows
                    .iter()
                    .map(|r| Bar {
                        id: r.server["id"].as_str().unwrap_or("").to_string(),
                        course: r.server["family"] == "course",
                        rps: r.rps,
                        spread: r.interval.map(|(lo, hi)| (hi - lo) / 2.0 / r.rps),
                    })
                    .collect(),
            })
            .collect();
        Chart {
            panels,
            machine: self.machine_short(),
        }
    }

    fn machine_short(&self) -> String {
        let m = &self.doc["machine"];
        format!(
            "{} cores, {}, {}",
            m["cores"],
            m["cpu"].as_str().unwrap_or("?"),
            m["date"].as_str().unwrap_or("?")
        )
    }
}

/// The course's prefork servers (stage 3 and later) run one interpreter per
/// worker, so `/cpu` can use every core.
fn is_prefork(id: &str) -> bool {
    ["stage3", "stage4", "stage5"]
        .iter()
        .any(|p| id.starts_with(p))
}

/// From the bridge benchmark: the cost of one request inside a worker
/// (`serve_one` minus the socket pair's system calls), the floor (the bare
/// Python call), and a sentence with every part.
fn bridge_costs() -> Option<(f64, f64, String)> {
    let ns = |name: &str| criterion_estimate("bridge", name).map(|(v, _, _)| v);
    let serve = ns("serve_one")?;
    let socket = ns("socketpair")?;
    let floor = ns("python_call")?;
    let mut parts = format!(
        "`serve_one` {serve:.0} ns, of which the socket pair's four system calls \
         {socket:.0} ns; the bare Python call {floor:.0} ns"
    );
    if let (Some(p), Some(e)) = (ns("parse_head"), ns("environ")) {
        let _ = write!(
            parts,
            "; parsing the head {p:.0} ns, building environ {e:.0} ns"
        );
    }
    if let Some(py) = ns("python_server") {
        let _ = write!(
            parts,
            ". For comparison, the same steps written in Python (environ, the call, the \
             response head; no parsing, no checks), as a Python server runs them: {py:.0} ns"
        );
    }
    Some(((serve - socket).max(0.0), floor, parts))
}

fn thousands(v: f64) -> String {
    let digits = (v.round() as u64).to_string();
    let mut groups = Vec::new();
    let mut end = digits.len();
    while end > 3 {
        groups.push(&digits[end - 3..end]);
        end -= 3;
    }
    groups.push(&digits[..end]);
    groups.reverse();
    groups.join(",")
}

fn millis(us: Option<f64>) -> String {
    match us {
        Some(v) if v >= 10_000.0 => format!("{:.0} ms", v / 1000.0),
        Some(v) => format!("{:.2} ms", v / 1000.0),
        None => "-".into(),
    }
}

fn micros(us: Option<f64>) -> String {
    match us {
        Some(v) if v >= 1000.0 => format!("{:.2} ms", v / 1000.0),
        Some(v) => format!("{v:.0} µs"),
        None => "-".into(),
    }
}

/// The mean RSS of the workers, their number, and their mean PSS.
fn rss(rss: &Value, pss: &Value) -> String {
    let mean_mib = |v: &Value| {
        let kib: Vec<f64> = v
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        (!kib.is_empty()).then(|| {
            (
                kib.iter().sum::<f64>() / kib.len() as f64 / 1024.0,
                kib.len(),
            )
        })
    };
    let Some((mean, n)) = mean_mib(rss) else {
        return "-".into();
    };
    let times = if n > 1 {
        format!(" x {n}")
    } else {
        String::new()
    };
    match mean_mib(pss) {
        Some((p, _)) => format!("{mean:.1} MiB{times} (PSS {p:.1})"),
        None => format!("{mean:.1} MiB{times}"),
    }
}
