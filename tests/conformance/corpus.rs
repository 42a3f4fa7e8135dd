//! The corpus: raw requests kept as data files under `tests/corpus/`, each
//! with the outcome a correct server gives (`tests/corpus/README.md` has the
//! format). `run_all` sends every case on a fresh connection to a running
//! stage and checks what comes back.
//!
//! One case is one file: a header block (comments, the expected outcome of
//! each response, the environ the app must have received) and, after a
//! `---` line, the exact bytes to send, with escapes (`\r\n`, `\xHH`, ...)
//! so that every control byte is visible and a newline in the file means
//! nothing.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use wsgi_course::client::{Conn, Response};

/// How long a case may wait for any one read; a server that answers slower
/// than this is treated as hung.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a server that faces the client itself gets to close the
/// connection after an error response.
const CLOSE_WITHIN: Duration = Duration::from_secs(3);
/// nginx's `lingering_timeout` is 5 s: after an error with a body still
/// unread it keeps reading until the client stops sending.
const NGINX_CLOSE_WITHIN: Duration = Duration::from_secs(7);
/// The statuses of a request the server refused before the app saw it:
/// after them the connection must close (the server can no longer know
/// where a next request would start).
const REJECTIONS: &[u16] = &[400, 408, 411, 413, 414, 417, 431, 501, 505];
/// The name of the by-design behaviour of stages that close after every
/// response: a pipelined case gets its first answer, then the close.
pub const CLOSES_AFTER_EACH_RESPONSE: &str = "closes-after-each-response";

/// What one response may be.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// 200 from `/environ`: the JSON environ, checked against the case.
    Environ,
    /// A response with this status. From 400 up the server must also close.
    Status(u16),
    /// No response at all: the connection ends (EOF or reset).
    Close,
    /// An HTTP/0.9 answer: a body without a status line, then the close.
    Http09,
}

/// A check of one environ key.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Check {
    /// Exactly one of these strings (bytes decoded as latin-1, as PEP 3333
    /// does); written `a <or> b`.
    OneOf(Vec<String>),
    /// The key must not be there.
    Absent,
    /// Absent, or the empty string.
    Empty,
    /// Not checked (an override that lifts a check).
    Any,
}

/// What the client must get for one request of the case.
#[derive(Clone, Debug, Default)]
struct Expect {
    outcomes: Vec<Outcome>,
    checks: BTreeMap<String, Check>,
    /// The response answers a HEAD request: no body follows its head.
    head: bool,
    /// The server must close after this response.
    close: bool,
}

/// Raw `key: value` lines of one response section, before resolution.
#[derive(Clone, Debug, Default)]
struct Section {
    lines: Vec<(String, String)>,
}

/// One corpus file.
#[derive(Clone, Debug)]
pub struct Case {
    /// `valid/023-absolute-form`.
    pub name: String,
    pub valid: bool,
    /// The comment lines, for failure messages and the report.
    pub about: String,
    raw: Vec<u8>,
    sections: Vec<Section>,
    /// Why the case differs behind nginx, named in `tests/corpus/README.md`.
    pub by_design: Option<String>,
    /// Stages (or `all`, `direct`, `nginx`) on which the case is known to
    /// fail, with the reason; the lead decides.
    known_failure: Option<(Vec<String>, String)>,
    /// Half-close the connection after sending: the server sees EOF.
    shutdown: bool,
}

/// How a case ended on one stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Passed with the answer its design gives instead (named).
    ByDesign(String),
    Fail(String),
    /// Failed as the corpus says it does today (the reason is in the file).
    KnownFailure(String),
}

/// Where the case runs: who faces the client, and whether the stage keeps
/// connections alive.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub via_nginx: bool,
    pub keep_alive: bool,
    /// The stage's name in known-failure lists (the test's name).
    pub stage: String,
}

// ---------------------------------------------------------------------------
// Loading.

/// The corpus directory.
pub fn dir() -> PathBuf {
    wsgi_course::server::repo_root().join("tests/corpus")
}

/// Every case, valid ones first, each directory in file-name order.
pub fn load_all() -> Result<Vec<Case>, String> {
    let mut cases = Vec::new();
    for (sub, valid) in [("valid", true), ("invalid", false)] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir().join(sub))
            .map_err(|e| format!("tests/corpus/{sub}: {e}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "http"))
            .collect();
        files.sort();
        for path in files {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
            let name = format!("{sub}/{stem}");
            cases.push(parse_case(&name, valid, &text).map_err(|e| format!("{name}: {e}"))?);
        }
    }
    Ok(cases)
}

fn parse_case(name: &str, valid: bool, text: &str) -> Result<Case, String> {
    let mut lines = text.lines();
    let mut about = Vec::new();
    let mut sections = vec![Section::default()];
    let mut by_design = None;
    let mut known_failure = None;
    let mut shutdown = false;
    let mut found_separator = false;
    for line in lines.by_ref() {
        let line = line.trim_end();
        if line == "---" {
            found_separator = true;
            break;
        }
        if let Some(comment) = line.strip_prefix('#') {
            about.push(comment.trim().to_string());
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if line == "+++" {
            sections.push(Section::default());
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| format!("not a `key: value` line: {line:?}"))?;
        let (key, value) = (key.trim(), value.trim());
        match key {
            "by-design" => by_design = Some(value.to_string()),
            "known-failure" => {
                let (scope, reason) = value
                    .split_once(':')
                    .ok_or("known-failure: STAGES: REASON")?;
                let scope = scope.split(',').map(|s| s.trim().to_string()).collect();
                known_failure = Some((scope, reason.trim().to_string()));
            }
            "shutdown" => shutdown = value == "yes",
            "nginx" => push(&mut sections, "nginx.expect", value),
            _ => push(&mut sections, key, value),
        }
    }
    if !found_separator {
        return Err("no `---` line before the request bytes".into());
    }
    let mut raw = Vec::new();
    for line in lines {
        raw.extend(unescape(line)?);
    }
    if raw.is_empty() {
        return Err("no request bytes".into());
    }
    let case = Case {
        name: name.to_string(),
        valid,
        about: about.join(" "),
        raw,
        sections,
        by_design,
        known_failure,
        shutdown,
    };
    // Resolve both ways once, so a malformed file fails on loading.
    for via_nginx in [false, true] {
        let plan = case.plan(via_nginx)?;
        if plan.is_empty() {
            return Err("no expected response".into());
        }
    }
    if case.has_nginx_override() && case.by_design.is_none() {
        return Err(
            "a case with nginx overrides must name the difference (by-design: NAME)".into(),
        );
    }
    Ok(case)
}

fn push(sections: &mut [Section], key: &str, value: &str) {
    if let Some(section) = sections.last_mut() {
        section.lines.push((key.to_string(), value.to_string()));
    }
}

/// Decodes the escapes of the format: `\r \n \t \0 \\ \xHH`, and
/// `\{N:TEXT}` for TEXT (itself escaped) repeated N times.
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let next = *bytes
            .get(i + 1)
            .ok_or_else(|| format!("a lone backslash at the end of {s:?}"))?;
        i += 2;
        match next {
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'0' => out.push(0),
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex = s
                    .get(i..i + 2)
                    .ok_or_else(|| format!("\\x needs two hex digits in {s:?}"))?;
                out.push(
                    u8::from_str_radix(hex, 16).map_err(|_| format!("bad \\x{hex} in {s:?}"))?,
                );
                i += 2;
            }
            b'{' => {
                // \{N:TEXT}: find the matching brace (TEXT may hold escapes,
                // not braces).
                let close = s[i..]
                    .find('}')
                    .ok_or_else(|| format!("unclosed \\{{ in {s:?}"))?;
                let inner = &s[i..i + close];
                let (count, text) = inner
                    .split_once(':')
                    .ok_or_else(|| format!("\\{{N:TEXT}} expected in {s:?}"))?;
                let count: usize = count
                    .parse()
                    .map_err(|_| format!("bad repeat count {count:?}"))?;
                let piece = unescape(text)?;
                for _ in 0..count {
                    out.extend_from_slice(&piece);
                }
                i += close + 1;
            }
            other => return Err(format!("unknown escape \\{} in {s:?}", other as char)),
        }
    }
    Ok(out)
}

fn parse_outcomes(value: &str) -> Result<Vec<Outcome>, String> {
    value
        .split('|')
        .map(|v| match v.trim() {
            "environ" => Ok(Outcome::Environ),
            "close" => Ok(Outcome::Close),
            "http09" => Ok(Outcome::Http09),
            n => n
                .parse::<u16>()
                .ok()
                .filter(|s| (100..600).contains(s))
                .map(Outcome::Status)
                .ok_or_else(|| format!("unknown outcome {n:?}")),
        })
        .collect()
}

fn parse_check(value: &str) -> Result<Check, String> {
    Ok(match value {
        "<absent>" => Check::Absent,
        "<empty>" => Check::Empty,
        "<any>" => Check::Any,
        v => Check::OneOf(
            v.split(" <or> ")
                .map(|one| unescape(one.trim()).map(|b| b.iter().map(|&b| char::from(b)).collect()))
                .collect::<Result<_, _>>()?,
        ),
    })
}

impl Case {
    /// The expected responses, in order, for a server behind nginx or not.
    fn plan(&self, via_nginx: bool) -> Result<Vec<Expect>, String> {
        let mut plan = Vec::new();
        for section in &self.sections {
            // Overrides replace the plain key; `nginx.expect: none` drops
            // the whole response behind nginx.
            let mut keys: Vec<(String, String)> = Vec::new();
            for (key, value) in &section.lines {
                let key = match key.strip_prefix("nginx.") {
                    Some(k) if via_nginx => k,
                    Some(_) => continue,
                    None => key.as_str(),
                };
                keys.retain(|(k, _)| k != key);
                keys.push((key.to_string(), value.clone()));
            }
            let mut expect = Expect::default();
            let mut skip = false;
            for (key, value) in keys {
                match key.as_str() {
                    "expect" if value == "none" => skip = true,
                    "expect" => expect.outcomes = parse_outcomes(&value)?,
                    "head" => expect.head = value == "yes",
                    "close" => expect.close = value == "yes",
                    "body" => {
                        expect
                            .checks
                            .insert("wsgi.input.body".into(), parse_check(&value)?);
                    }
                    k if k.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                        || k.starts_with("wsgi.") =>
                    {
                        expect.checks.insert(key.clone(), parse_check(&value)?);
                    }
                    _ => return Err(format!("unknown key {key:?}")),
                }
            }
            if skip {
                continue;
            }
            if expect.outcomes.is_empty() {
                return Err("a response section without `expect:`".into());
            }
            if !expect.outcomes.contains(&Outcome::Environ) {
                // Behind nginx an override may turn an environ case into an
                // error: its checks then have nothing to check.
                if !expect.checks.is_empty() && !via_nginx {
                    return Err("environ checks on a response that is not `environ`".into());
                }
                expect.checks.clear();
            }
            plan.push(expect);
        }
        Ok(plan)
    }

    /// Whether the case names this stage as a known failure.
    fn known_failure_on(&self, target: &Target) -> Option<&str> {
        let (scope, reason) = self.known_failure.as_ref()?;
        scope
            .iter()
            .any(|s| {
                s == "all"
                    || *s == target.stage
                    || (s == "nginx" && target.via_nginx)
                    || (s == "direct" && !target.via_nginx)
            })
            .then_some(reason.as_str())
    }

    fn has_nginx_override(&self) -> bool {
        self.sections
            .iter()
            .any(|s| s.lines.iter().any(|(k, _)| k.starts_with("nginx.")))
    }
}

// ---------------------------------------------------------------------------
// Running.

/// Runs one case on a fresh connection and judges it.
pub fn run_case(case: &Case, target: &Target) -> Verdict {
    let result = exchange(case, target);
    let known = case.known_failure_on(target);
    match (result, known) {
        (Ok(None), None) => Verdict::Pass,
        (Ok(Some(design)), None) => Verdict::ByDesign(design),
        (Err(e), None) => Verdict::Fail(e),
        (Err(_), Some(reason)) => Verdict::KnownFailure(reason.to_string()),
        (Ok(_), Some(reason)) => Verdict::Fail(format!(
            "marked as a known failure ({reason}) but it passes: remove the mark"
        )),
    }
}

/// Sends the case and checks every response. `Ok(Some(name))` when the
/// stage passed with its by-design answer.
fn exchange(case: &Case, target: &Target) -> Result<Option<String>, String> {
    let mut plan = case.plan(target.via_nginx)?;
    let mut design = (target.via_nginx && case.has_nginx_override())
        .then(|| case.by_design.clone())
        .flatten();
    // A stage that closes after every response answers the first request
    // of a pipeline and closes: the others are never read.
    let degrade = !target.keep_alive && plan.len() > 1;
    if degrade {
        plan.truncate(1);
        plan[0].close = true;
        design = Some(CLOSES_AFTER_EACH_RESPONSE.to_string());
    }

    let mut conn = Conn::connect(target.addr).map_err(|e| format!("cannot connect: {e}"))?;
    conn.set_timeout(READ_TIMEOUT);
    // A server may answer (and close) before it has read everything; the
    // answer is what counts, so a failed write is not yet a failure.
    let sent = conn.send(&case.raw);
    if case.shutdown {
        let _ = conn.shutdown_write();
    }

    let mut closed = false;
    for (i, expect) in plan.iter().enumerate() {
        let which = if plan.len() > 1 {
            format!("response {}: ", i + 1)
        } else {
            String::new()
        };
        let resp = match read_final(&mut conn, expect.head) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                if expect.outcomes.contains(&Outcome::Close) {
                    closed = true;
                    if i + 1 != plan.len() {
                        return Err(format!("{which}closed where more responses were expected"));
                    }
                    break;
                }
                return Err(format!(
                    "{which}the server closed without answering (expected {}){}",
                    describe(&expect.outcomes),
                    sent.as_ref()
                        .err()
                        .map(|e| format!("; sending failed: {e}"))
                        .unwrap_or_default()
                ));
            }
            Err(e)
                if e.kind() == io::ErrorKind::InvalidData
                    && expect.outcomes.contains(&Outcome::Http09) =>
            {
                // No status line: what came is the body, and the close
                // ends it.
                if !conn.is_closed(CLOSE_WITHIN) {
                    return Err(format!("{which}an HTTP/0.9 answer must end with a close"));
                }
                closed = true;
                break;
            }
            Err(e) => {
                return Err(format!(
                    "{which}no valid response (expected {}): {e}",
                    describe(&expect.outcomes)
                ));
            }
        };
        judge(expect, &resp).map_err(|e| format!("{which}{e}"))?;
        let error = REJECTIONS.contains(&resp.status);
        if degrade && !resp.closes() {
            return Err(format!(
                "{which}a stage without keep-alive must say `Connection: close`"
            ));
        }
        // Behind nginx, an error the app server answered (stage 4 applies
        // the codec's limits to what nginx forwards) reaches the client
        // through nginx, which keeps its own connection to the client.
        let relayed = target.via_nginx && error && !expect.close && !resp.closes();
        if (error || expect.close || resp.closes()) && !relayed {
            if !resp.closes() && (error || expect.close) {
                return Err(format!(
                    "{which}{} without `Connection: close`",
                    resp.status
                ));
            }
            wait_closed(&mut conn, target.via_nginx)
                .map_err(|e| format!("{which}after {}: {e}", resp.status))?;
            closed = true;
            if i + 1 != plan.len() {
                return Err(format!(
                    "{which}the connection closed after {} where more responses were expected",
                    resp.status
                ));
            }
        }
    }

    if !closed {
        // The connection is still open: nothing may come before the answer
        // to one more request. A response to a smuggled request would.
        conn.send(b"GET /environ/sentinel HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .map_err(|e| format!("the connection broke after the expected responses: {e}"))?;
        let r = read_final(&mut conn, false)
            .map_err(|e| format!("no answer to a request sent after the case: {e}"))?;
        let path = serde_json::from_slice::<Value>(&r.body)
            .ok()
            .and_then(|v| v.get("PATH_INFO").cloned());
        if path != Some(Value::String("/environ/sentinel".into())) {
            return Err(format!(
                "an extra response came before the answer to the next request \
                 (a smuggled request?): {} {:?}",
                r.status,
                truncate(&r.text(), 200)
            ));
        }
    }
    Ok(design)
}

/// Reads the next final response, skipping interim 1xx ones.
fn read_final(conn: &mut Conn, head: bool) -> io::Result<Response> {
    loop {
        let r = conn.read_response(head)?;
        if !(100..200).contains(&r.status) {
            return Ok(r);
        }
    }
}

/// Waits for the server to close, and checks nothing else arrived.
fn wait_closed(conn: &mut Conn, via_nginx: bool) -> Result<(), String> {
    let start = Instant::now();
    let within = if via_nginx {
        // The response said `Connection: close`: a client stops sending,
        // which ends nginx's lingering close at once.
        let _ = conn.shutdown_write();
        NGINX_CLOSE_WITHIN
    } else {
        CLOSE_WITHIN
    };
    if !conn.is_closed(within) {
        return Err(format!(
            "the connection is still open after {:?}",
            start.elapsed()
        ));
    }
    match conn.read_response(false) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(()),
        Ok(r) => Err(format!(
            "an extra response arrived before the close (a smuggled request?): {} {:?}",
            r.status,
            truncate(&r.text(), 200)
        )),
        Err(e) => Err(format!("bytes after the response: {e}")),
    }
}

fn judge(expect: &Expect, resp: &Response) -> Result<(), String> {
    let environ_ok = expect.outcomes.contains(&Outcome::Environ) && resp.status == 200;
    if environ_ok {
        return check_environ(&expect.checks, resp);
    }
    if expect.outcomes.contains(&Outcome::Status(resp.status)) {
        return Ok(());
    }
    Err(format!(
        "expected {}, got {} {:?}",
        describe(&expect.outcomes),
        resp.status,
        truncate(&resp.text(), 300)
    ))
}

fn check_environ(checks: &BTreeMap<String, Check>, resp: &Response) -> Result<(), String> {
    let env: Value = serde_json::from_slice(&resp.body).map_err(|_| {
        format!(
            "200 but not the /environ JSON: {:?}",
            truncate(&resp.text(), 200)
        )
    })?;
    let mut wrong = Vec::new();
    for (key, check) in checks {
        let got = env.get(key);
        let ok = match check {
            Check::Any => true,
            Check::Absent => got.is_none(),
            Check::Empty => got.is_none_or(|v| v == ""),
            Check::OneOf(all) => got
                .and_then(Value::as_str)
                .is_some_and(|g| all.iter().any(|s| s == g)),
        };
        if !ok {
            wrong.push(format!(
                "{key}: expected {}, got {}",
                match check {
                    Check::OneOf(all) => all
                        .iter()
                        .map(|s| format!("{s:?}"))
                        .collect::<Vec<_>>()
                        .join(" or "),
                    other => format!("{other:?}"),
                },
                got.map_or("nothing".to_string(), |v| truncate(&v.to_string(), 200))
            ));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("environ differs: {}", wrong.join("; ")))
    }
}

fn describe(outcomes: &[Outcome]) -> String {
    outcomes
        .iter()
        .map(|o| match o {
            Outcome::Environ => "200 /environ".to_string(),
            Outcome::Status(s) => s.to_string(),
            Outcome::Close => "a close".to_string(),
            Outcome::Http09 => "an HTTP/0.9 answer".to_string(),
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}

// ---------------------------------------------------------------------------
// The suite's side.

/// One result line: a case (hand-written or from the corpus) on a stage.
#[derive(Clone, Debug)]
pub struct Outcomes {
    pub stage: String,
    pub results: Vec<(String, Verdict)>,
}

/// Runs the whole corpus against a stage. After each case a plain request
/// on a new connection must succeed: no case may take the server down.
pub fn run_all(target: &Target) -> Vec<(String, Verdict)> {
    let cases = match load_all() {
        Ok(c) => c,
        Err(e) => return vec![("corpus".into(), Verdict::Fail(e))],
    };
    let mut results = Vec::with_capacity(cases.len());
    for case in &cases {
        let mut verdict = run_case(case, target);
        if let Err(e) = wsgi_course::client::get(target.addr, "/") {
            verdict = Verdict::Fail(format!(
                "the server stopped answering afterwards ({e}); before that: {verdict:?}"
            ));
            results.push((case.name.clone(), verdict));
            break;
        }
        results.push((case.name.clone(), verdict));
    }
    results
}

/// The corpus as part of `run_suite`: runs every case against the stage at
/// `addr`, adds each failure to `failed` (which already holds the failures
/// of the hand-written cases), and writes the report file when asked.
pub fn run_in_suite(
    addr: SocketAddr,
    bin: &str,
    via_nginx: bool,
    keep_alive: bool,
    failed: &mut Vec<String>,
) {
    let target = Target {
        addr,
        via_nginx,
        keep_alive,
        stage: stage_name(bin),
    };
    // The hand-written cases first, judged from the failures so far.
    let mut results: Vec<(String, Verdict)> = super::cases::CASES
        .iter()
        .map(|(name, _)| {
            let prefix = format!("{name}:");
            let verdict = if let Some(f) = failed.iter().find(|f| f.starts_with(&prefix)) {
                Verdict::Fail(f[prefix.len()..].trim().to_string())
            } else if !keep_alive && super::cases::NEEDS_KEEP_ALIVE.contains(name) {
                Verdict::ByDesign(CLOSES_AFTER_EACH_RESPONSE.to_string())
            } else {
                Verdict::Pass
            };
            (format!("cases/{name}"), verdict)
        })
        .collect();
    let corpus = run_all(&target);
    for (name, verdict) in &corpus {
        if let Verdict::Fail(why) = verdict {
            failed.push(format!("{name}: {why}"));
        }
    }
    results.extend(corpus);
    write_report(&Outcomes {
        stage: target.stage,
        results,
    });
}

/// When `WSGI_CONFORMANCE_REPORT` names a directory, writes one JSON file
/// per stage there for `conformance-report` to print.
pub fn write_report(outcomes: &Outcomes) {
    let Some(dir) = std::env::var_os("WSGI_CONFORMANCE_REPORT") else {
        return;
    };
    let results: Vec<Value> = outcomes
        .results
        .iter()
        .map(|(name, v)| {
            let (verdict, detail) = match v {
                Verdict::Pass => ("pass", String::new()),
                Verdict::ByDesign(d) => ("by-design", d.clone()),
                Verdict::Fail(e) => ("fail", e.clone()),
                Verdict::KnownFailure(r) => ("known-failure", r.clone()),
            };
            serde_json::json!({"case": name, "verdict": verdict, "detail": detail})
        })
        .collect();
    let doc = serde_json::json!({"stage": outcomes.stage, "results": results});
    let path = Path::new(&dir).join(format!("{}.json", outcomes.stage));
    if let Err(e) = std::fs::write(&path, doc.to_string()) {
        eprintln!("cannot write {}: {e}", path.display());
    }
}

/// The stage's name for reports: the test's name (each suite runs on its
/// own test thread), else the binary.
pub fn stage_name(bin: &str) -> String {
    match std::thread::current().name() {
        Some(n) if n != "main" => n.rsplit("::").next().unwrap_or(n).to_string(),
        _ => bin.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(unescape(r"a\r\n\t\0\\\x7f").unwrap(), b"a\r\n\t\0\\\x7f");
        assert_eq!(unescape(r"\{3:ab}c").unwrap(), b"abababc");
        assert_eq!(unescape(r"\{2:\r\n}").unwrap(), b"\r\n\r\n");
        assert!(unescape(r"\q").is_err());
        assert!(unescape(r"\x4").is_err());
        assert!(unescape("\\").is_err());
    }

    #[test]
    fn a_case_file_parses() {
        let case = parse_case(
            "valid/x",
            true,
            "# about\nexpect: environ\nPATH_INFO: /a\\x20b\nnginx.PATH_INFO: <any>\n\
             by-design: nginx-x\n+++\nexpect: 400|close\nnginx: none\n---\nGET / HTTP/1.1\\r\\n\n\\r\\n\n",
        )
        .unwrap();
        assert_eq!(case.raw, b"GET / HTTP/1.1\r\n\r\n");
        let direct = case.plan(false).unwrap();
        assert_eq!(direct.len(), 2);
        assert_eq!(
            direct[0].checks["PATH_INFO"],
            Check::OneOf(vec!["/a b".to_string()])
        );
        assert_eq!(
            direct[1].outcomes,
            vec![Outcome::Status(400), Outcome::Close]
        );
        let nginx = case.plan(true).unwrap();
        assert_eq!(nginx.len(), 1);
        assert_eq!(nginx[0].checks["PATH_INFO"], Check::Any);
        assert_eq!(
            parse_check("a <or> \\t b").unwrap(),
            Check::OneOf(vec!["a".to_string(), "\t b".to_string()])
        );
        assert!(parse_case("x", true, "expect: environ\nnginx: 400\n---\nGET\n").is_err());
    }

    /// The corpus itself: every file well formed, enough of each kind, and
    /// every by-design difference explained in the notes for the book.
    #[test]
    fn corpus_is_well_formed_and_documented() {
        let cases = load_all().unwrap_or_else(|e| panic!("{e}"));
        let valid = cases.iter().filter(|c| c.valid).count();
        let invalid = cases.len() - valid;
        assert!(valid >= 60, "only {valid} valid cases");
        assert!(invalid >= 60, "only {invalid} invalid cases");
        let notes = std::fs::read_to_string(dir().join("README.md")).unwrap();
        let mut names: Vec<&str> = cases
            .iter()
            .filter_map(|c| c.by_design.as_deref())
            .collect();
        names.push(CLOSES_AFTER_EACH_RESPONSE);
        for name in names {
            assert!(
                notes.contains(&format!("`{name}`")),
                "by-design difference `{name}` has no note in tests/corpus/README.md"
            );
        }
        for case in &cases {
            assert!(!case.about.is_empty(), "{}: say what it tests", case.name);
            let plan = case.plan(false).unwrap();
            let first = &plan[0].outcomes;
            if case.valid {
                assert!(
                    !first.contains(&Outcome::Close)
                        && !first
                            .iter()
                            .any(|o| matches!(o, Outcome::Status(s) if REJECTIONS.contains(s))),
                    "{}: a valid case must be answered",
                    case.name
                );
            } else {
                let last = &plan[plan.len() - 1].outcomes;
                assert!(
                    last.iter().all(|o| matches!(o, Outcome::Close)
                        || matches!(o, Outcome::Status(s) if REJECTIONS.contains(s))),
                    "{}: an invalid case must end in an error or a close",
                    case.name
                );
            }
        }
    }
}
