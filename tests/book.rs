//! Keeps the book in `book/` honest.
//!
//! mdBook is forgiving in ways that hide mistakes: an `{{#include}}` of a
//! missing file is logged and the build still succeeds, an include of an
//! anchor that is not in the file silently includes nothing, and a link to a
//! missing page is not checked at all. When code moves, the book would show
//! empty listings and dead links without anyone noticing. These tests read
//! the book's sources and fail instead:
//!
//! * every `{{#include path}}`, `{{#include path:anchor}}` or
//!   `{{#include path:from:to}}` (and `rustdoc_include`, `playground`) names a
//!   file that exists, and an anchor that has both its `ANCHOR: name` and its
//!   `ANCHOR_END: name` line, with something between them;
//! * every relative link and image (`[text](page.md)`,
//!   `[text](page.md#heading)`, `![alt](picture.png)`) points at a file
//!   inside `book/src`, and a `#fragment` at a heading of that page.
//!
//! A last test builds the book with `mdbook` when it is installed, and fails
//! on any warning or error it prints.
//!
//! The nginx configuration of stage 4's lab (`book/examples/nginx.conf` and
//! `uwsgi_params`) is stage 5's generator's output; a test checks it still
//! is, and rewrites it when asked (`WSGI_COURSE_WRITE_EXAMPLES=1`).

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn book_src() -> PathBuf {
    repo_root().join("book").join("src")
}

/// Every `.md` file under `dir`, sorted, so failures are listed in a
/// stable order.
fn markdown_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A path as the messages show it: relative to the workspace root.
fn shown(path: &Path) -> String {
    let root = repo_root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// `a/b/../c` → `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The 1-based number of the line where byte `offset` of `text` is.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

// ---------------------------------------------------------------------------
// {{#include}}

/// One `{{#type args}}` expression, as mdBook's links preprocessor reads it.
#[derive(Debug, PartialEq)]
struct Include {
    line: usize,
    /// `include`, `rustdoc_include` or `playground`.
    kind: String,
    path: String,
    /// What follows the first `:` of the path: an anchor or a line range.
    selector: Option<String>,
}

/// The include expressions of a chapter. Like mdBook, this finds them
/// everywhere, code blocks included, and skips escaped ones (`\{{#...}}`).
fn find_includes(text: &str) -> Vec<Include> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("{{") {
        let start = from + i;
        from = start + 2;
        if text[..start].ends_with('\\') {
            continue;
        }
        let rest = &text[start + 2..];
        let Some(end) = rest.find("}}") else { break };
        let inner = rest[..end].trim_start();
        let Some(inner) = inner.strip_prefix('#') else {
            continue;
        };
        // mdBook's pattern: #type, whitespace, then anything but '}'.
        let kind_len = inner
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(inner.len());
        let (kind, args) = inner.split_at(kind_len);
        if kind.is_empty() || !args.starts_with(char::is_whitespace) || args.contains('}') {
            continue;
        }
        let Some(file_arg) = args.split_whitespace().next() else {
            continue;
        };
        let (path, selector) = match kind {
            "include" | "rustdoc_include" => match file_arg.split_once(':') {
                Some((p, s)) => (p, Some(s.to_string())),
                None => (file_arg, None),
            },
            "playground" | "playpen" => (file_arg, None),
            _ => continue,
        };
        found.push(Include {
            line: line_of(text, start),
            kind: kind.to_string(),
            path: path.to_string(),
            selector,
        });
        from = start + 2 + end + 2;
    }
    found
}

/// The name after `marker` (`ANCHOR:` or `ANCHOR_END:`) on this line, read
/// the way mdBook reads it: optional whitespace, then `[A-Za-z0-9_-]+`.
fn anchor_on_line<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let after = &line[line.find(marker)? + marker.len()..];
    let after = after.trim_start();
    let len = after
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(after.len());
    (len > 0).then(|| &after[..len])
}

/// What is wrong with `anchor` in `source` (None: nothing).
fn check_anchor(source: &str, anchor: &str) -> Option<String> {
    let lines: Vec<&str> = source.lines().collect();
    let starts: Vec<usize> = (0..lines.len())
        .filter(|&i| anchor_on_line(lines[i], "ANCHOR:") == Some(anchor))
        .collect();
    let Some(&start) = starts.first() else {
        return Some(format!("has no line `ANCHOR: {anchor}`"));
    };
    if starts.len() > 1 {
        return Some(format!(
            "has `ANCHOR: {anchor}` {} times (mdBook would use the first)",
            starts.len()
        ));
    }
    let Some(end) =
        (start + 1..lines.len()).find(|&i| anchor_on_line(lines[i], "ANCHOR_END:") == Some(anchor))
    else {
        return Some(format!(
            "has `ANCHOR: {anchor}` (line {}) but no `ANCHOR_END: {anchor}` after it",
            start + 1
        ));
    };
    let content = lines[start + 1..end].iter().any(|l| {
        anchor_on_line(l, "ANCHOR:").is_none()
            && anchor_on_line(l, "ANCHOR_END:").is_none()
            && !l.trim().is_empty()
    });
    (!content).then(|| format!("has nothing between `ANCHOR: {anchor}` and `ANCHOR_END: {anchor}`"))
}

/// What is wrong with a line range `from:to` of a file of `line_count`
/// lines, read as mdBook does (`n`, `n:`, `:m`, `n:m`; 1-based).
fn check_range(selector: &str, line_count: usize) -> Option<String> {
    let first = selector.split(':').next().unwrap_or("");
    match first.parse::<usize>() {
        Ok(start) if start == 0 || start > line_count => Some(format!(
            "is {line_count} lines long, so the range {selector} selects nothing"
        )),
        _ => None,
    }
}

/// The problems of one chapter's includes, as "chapter:line: message".
fn include_problems(chapter: &Path, text: &str) -> Vec<String> {
    let dir = chapter.parent().expect("a chapter is in a directory");
    let mut problems = Vec::new();
    for inc in find_includes(text) {
        let here = format!("{}:{}", shown(chapter), inc.line);
        let target = normalize(&dir.join(&inc.path));
        let source = match fs::read_to_string(&target) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!(
                    "{here}: {{{{#{} {}}}}} names {}, which cannot be read ({e})",
                    inc.kind,
                    inc.path,
                    shown(&target)
                ));
                continue;
            }
        };
        let Some(selector) = inc.selector.as_deref() else {
            continue;
        };
        let first = selector.split(':').next().unwrap_or("");
        let problem = if first.is_empty() || first.parse::<usize>().is_ok() {
            check_range(selector, source.lines().count())
        } else {
            check_anchor(&source, first)
        };
        if let Some(p) = problem {
            problems.push(format!("{here}: {} {p}", inc.path));
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// Links

/// A link target found in a chapter.
#[derive(Debug, PartialEq)]
struct LinkTarget {
    line: usize,
    target: String,
}

/// The length of the backtick run at the start of `s`.
fn backtick_run(s: &str) -> usize {
    s.len() - s.trim_start_matches('`').len()
}

/// `line` without its inline code spans (`` `like this` ``), whose
/// contents are not links.
fn without_code_spans(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find('`') {
        out.push_str(&rest[..i]);
        let run = backtick_run(&rest[i..]);
        let after = &rest[i + run..];
        let fence = "`".repeat(run);
        match after.find(&fence) {
            Some(j) => rest = &after[j + run..],
            None => {
                out.push_str(&rest[i..i + run]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The lines of a chapter that are prose, with their 1-based numbers:
/// fenced code blocks are left out (their contents are not Markdown).
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut fence: Option<(char, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let run = marker.map_or(0, |m| trimmed.len() - trimmed.trim_start_matches(m).len());
        match (fence, marker) {
            (None, Some(m)) if indent <= 3 && run >= 3 => fence = Some((m, run)),
            (Some((m, n)), Some(c)) if c == m && run >= n && trimmed.trim_end().len() == run => {
                fence = None
            }
            (None, _) => out.push((i + 1, line)),
            _ => {}
        }
    }
    out
}

/// Link and image targets of a chapter: inline `[..](target)`, reference
/// definitions `[label]: target`, and `href`/`src` attributes of raw HTML.
fn find_links(text: &str) -> Vec<LinkTarget> {
    let mut found = Vec::new();
    for (line_no, line) in prose_lines(text) {
        let line = without_code_spans(line);
        let mut push = |target: &str| {
            let target = target.trim();
            let target = target
                .strip_prefix('<')
                .and_then(|t| t.split_once('>'))
                .map_or_else(
                    || target.split_whitespace().next().unwrap_or(""),
                    |(t, _)| t,
                );
            if !target.is_empty() {
                found.push(LinkTarget {
                    line: line_no,
                    target: target.to_string(),
                });
            }
        };
        let mut rest = line.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            // The target ends at the `)` that balances the `(`.
            let mut depth = 1;
            let end = after
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(after.len(), |(j, _)| j);
            push(&after[..end]);
            rest = &after[end..];
        }
        let trimmed = line.trim_start();
        if line.len() - trimmed.len() <= 3
            && trimmed.starts_with('[')
            && let Some((_, target)) = trimmed.split_once("]:")
        {
            push(target);
        }
        for attr in ["href=\"", "src=\""] {
            let mut rest = line.as_str();
            while let Some(i) = rest.find(attr) {
                let after = &rest[i + attr.len()..];
                let end = after.find('"').unwrap_or(after.len());
                push(&after[..end]);
                rest = &after[end..];
            }
        }
    }
    found
}

/// A target with a scheme (`https:`, `mailto:`) leaves the book.
fn is_external(target: &str) -> bool {
    let before = target.split(['/', '?', '#']).next().unwrap_or("");
    before.contains(':')
}

/// The `id`s mdBook gives the headings of a chapter: the heading's text,
/// lower-cased, spaces made `-`, everything but letters, digits, `_` and `-`
/// dropped, and `-1`, `-2`... appended to repeats. `{#custom}` ids win.
fn heading_ids(text: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    for (_, line) in prose_lines(text) {
        let trimmed = line.trim_start();
        let level = trimmed.len() - trimmed.trim_start_matches('#').len();
        if line.len() - trimmed.len() > 3 || !(1..=6).contains(&level) {
            continue;
        }
        let content = &trimmed[level..];
        if !(content.is_empty() || content.starts_with([' ', '\t'])) {
            continue;
        }
        let content = content.trim().trim_end_matches('#').trim_end();
        let (content, custom) = match content.strip_suffix('}').and_then(|c| c.rsplit_once("{#")) {
            Some((before, id)) => (before.trim_end(), Some(id.to_string())),
            None => (content, None),
        };
        let id = custom.unwrap_or_else(|| id_from_heading(content));
        let mut unique = id.clone();
        let mut n = 1;
        while !ids.insert(unique.clone()) {
            unique = format!("{id}-{n}");
            n += 1;
        }
    }
    ids
}

/// The text a heading renders to (links become their text, code spans
/// their contents, HTML tags and `*` emphasis disappear), made into an id.
fn id_from_heading(markdown: &str) -> String {
    let mut text = String::new();
    let mut chars = markdown.chars().peekable();
    let mut in_tag = false;
    let mut skipping_url = false;
    while let Some(c) = chars.next() {
        match c {
            '<' if !in_tag => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if in_tag => {}
            ']' if chars.peek() == Some(&'(') => skipping_url = true,
            ')' if skipping_url => skipping_url = false,
            _ if skipping_url => {}
            '[' | ']' | '`' | '*' | '!' => {}
            _ => text.push(c),
        }
    }
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c)
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// The problems of one chapter's links, as "chapter:line: message".
fn link_problems(chapter: &Path, text: &str, src: &Path) -> Vec<String> {
    let dir = chapter.parent().expect("a chapter is in a directory");
    let mut problems = Vec::new();
    for link in find_links(text) {
        if is_external(&link.target) {
            continue;
        }
        let here = format!("{}:{}", shown(chapter), link.line);
        let (path, fragment) = match link.target.split_once('#') {
            Some((p, f)) => (p, Some(f)),
            None => (link.target.as_str(), None),
        };
        let path = path.split('?').next().unwrap_or("");
        let target = if path.is_empty() {
            chapter.to_path_buf()
        } else {
            normalize(&dir.join(path))
        };
        if !target.starts_with(src) {
            problems.push(format!(
                "{here}: ({}) points outside book/src; the built book would not contain it",
                link.target
            ));
            continue;
        }
        if !target.is_file() {
            problems.push(format!(
                "{here}: ({}) points at {}, which does not exist",
                link.target,
                shown(&target)
            ));
            continue;
        }
        let Some(fragment) = fragment.filter(|f| !f.is_empty()) else {
            continue;
        };
        if target.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let ids = if path.is_empty() {
            heading_ids(text)
        } else {
            heading_ids(&read(&target))
        };
        if !ids.contains(fragment) {
            problems.push(format!(
                "{here}: ({}): {} has no heading with the id `{fragment}`",
                link.target,
                shown(&target)
            ));
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// The tests

/// Every chapter's problems of one kind, with the chapter count.
fn problems_in_book(check: impl Fn(&Path, &str, &Path) -> Vec<String>) -> (usize, Vec<String>) {
    let src = book_src();
    let chapters = markdown_files(&src);
    assert!(chapters.len() > 1, "no chapters found in {}", src.display());
    let mut problems = Vec::new();
    for chapter in &chapters {
        problems.extend(check(chapter, &read(chapter), &src));
    }
    (chapters.len(), problems)
}

#[test]
fn every_include_names_an_existing_file_and_anchor() {
    let (chapters, problems) = problems_in_book(|chapter, text, _| include_problems(chapter, text));
    assert!(
        problems.is_empty(),
        "{} broken include(s) in the book ({chapters} chapters checked):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[test]
fn every_relative_link_and_image_points_at_an_existing_file_and_heading() {
    let (chapters, problems) = problems_in_book(link_problems);
    assert!(
        problems.is_empty(),
        "{} broken link(s) in the book ({chapters} chapters checked):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[test]
fn every_chapter_is_in_the_summary() {
    // mdBook ignores a page SUMMARY.md does not list: it is never built.
    let src = book_src();
    let summary = read(&src.join("SUMMARY.md"));
    let listed: HashSet<PathBuf> = find_links(&summary)
        .into_iter()
        .map(|l| normalize(&src.join(l.target.split('#').next().unwrap_or(""))))
        .collect();
    let orphans: Vec<String> = markdown_files(&src)
        .into_iter()
        .filter(|p| !p.ends_with("SUMMARY.md") && !listed.contains(p))
        .map(|p| shown(&p))
        .collect();
    assert!(
        orphans.is_empty(),
        "pages missing from SUMMARY.md:\n  {}",
        orphans.join("\n  ")
    );
}

/// The checks themselves must catch what they are for: a test that cannot
/// fail proves nothing.
#[test]
fn the_checks_catch_broken_includes_and_links() {
    let src = book_src();
    let chapter = src.join("stage1").join("index.md");
    let broken = "\
# Title\n\
\n\
```rust\n\
{{#include ../../../stage1-single/src/lib.rs:serve_forever}}\n\
{{#include ../../../stage1-single/src/lib.rs:no_such_anchor}}\n\
{{#include ../../../stage1-single/src/no_such_file.rs}}\n\
{{#include ../../../stage1-single/src/lib.rs:100000:100010}}\n\
\\{{#include escaped/is/fine.rs}}\n\
[not a link](in_code.md) inside a code block\n\
```\n\
\n\
[fine](experiments.md), [fine too](experiments.md#3-measure-it), [here](#title),\n\
[gone](no-such-page.md), [no heading](experiments.md#no-such-heading),\n\
![missing picture](pictures/none.png), [outside](../../../README.md),\n\
`[code span](not-a-link.md)`, [web](https://peps.python.org/pep-3333/).\n";
    let includes = include_problems(&chapter, broken);
    assert_eq!(includes.len(), 3, "{includes:#?}");
    assert!(
        includes[0].contains(":5: ") && includes[0].contains("no line `ANCHOR: no_such_anchor`")
    );
    assert!(includes[1].contains(":6: ") && includes[1].contains("cannot be read"));
    assert!(includes[2].contains(":7: ") && includes[2].contains("selects nothing"));

    let links = link_problems(&chapter, broken, &src);
    assert_eq!(links.len(), 4, "{links:#?}");
    assert!(
        links[0].contains("(no-such-page.md) points at") && links[0].contains("does not exist")
    );
    assert!(links[1].contains("has no heading with the id `no-such-heading`"));
    assert!(links[2].contains("(pictures/none.png)"));
    assert!(links[3].contains("points outside book/src"));
}

#[test]
fn anchors_need_both_ends_and_something_between() {
    let source = "a\n// ANCHOR: whole\nb\n// ANCHOR: open\nc\n// ANCHOR_END: whole\n// ANCHOR: empty\n// ANCHOR_END: empty\n";
    assert_eq!(check_anchor(source, "whole"), None);
    assert!(
        check_anchor(source, "open")
            .unwrap()
            .contains("no `ANCHOR_END: open`")
    );
    assert!(
        check_anchor(source, "empty")
            .unwrap()
            .contains("nothing between")
    );
    assert!(check_anchor(source, "who").unwrap().contains("no line"));
    // Python's comments work too.
    assert_eq!(
        check_anchor("# ANCHOR: io\nx = 1\n# ANCHOR_END: io\n", "io"),
        None
    );
}

#[test]
fn heading_ids_are_mdbooks() {
    let ids = heading_ids(
        "# Stage 1: one connection at a time\n## 2. One slow request blocks everyone\n\
         ## `wsgi.input`\n## [Linked](x.md) *text*\n## Start-up\n## Start-up\n## Custom {#mine}\n\
         ```\n# not a heading\n```\n#hashtag\n",
    );
    let mut ids: Vec<_> = ids.into_iter().collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "2-one-slow-request-blocks-everyone",
            "linked-text",
            "mine",
            "stage-1-one-connection-at-a-time",
            "start-up",
            "start-up-1",
            "wsgiinput",
        ]
    );
}

#[test]
fn the_book_builds_without_warnings() {
    let version = match Command::new("mdbook").arg("--version").output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "skipped: mdbook is not on PATH (CI installs it: cargo install mdbook --version 0.5.4 --locked)"
            );
            return;
        }
        Err(e) => panic!("cannot run mdbook: {e}"),
    };
    let dest = Path::new(env!("CARGO_TARGET_TMPDIR")).join("book-html");
    let out = Command::new("mdbook")
        .arg("build")
        .arg(repo_root().join("book"))
        .arg("--dest-dir")
        .arg(&dest)
        .output()
        .expect("mdbook runs");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{version}: `mdbook build book` failed:\n{log}"
    );
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert!(
        complaints.is_empty(),
        "{version} complained while building the book:\n{}",
        complaints.join("\n")
    );
    // Each chapter became a page.
    let src = book_src();
    let mut missing = BTreeMap::new();
    for chapter in markdown_files(&src) {
        let rel = chapter.strip_prefix(&src).expect("under book/src");
        if rel == Path::new("SUMMARY.md") {
            continue;
        }
        let page = dest.join(rel).with_extension("html");
        if !page.is_file() {
            missing.insert(rel.display().to_string(), page.display().to_string());
        }
    }
    assert!(missing.is_empty(), "chapters without a page: {missing:#?}");
}

/// What `book/examples/nginx.conf` says on top.
const LAB_HEADER: &str = "\
# nginx in front of stage 4, for the book's experiments (stage 4, section 3).
# Written by stage 5's generator (stage5-nginx/src/config.rs), the one nginx
# configuration of the workspace, with the lab's settings: one worker, no
# static files, everything in /tmp/nginx-lab, the app on /tmp/app.sock.
# tests/book.rs checks it; WSGI_COURSE_WRITE_EXAMPLES=1 cargo test --test book
# writes it again.
";

#[test]
fn the_labs_nginx_config_is_what_stage5_writes() {
    use stage5_nginx::config::{self, NginxSettings};
    let lab = NginxSettings {
        run_dir: PathBuf::from("/tmp/nginx-lab"),
        listen: ([127, 0, 0, 1], 8080).into(),
        worker_processes: Some(1),
        static_dir: None,
        upstreams: vec!["unix:/tmp/app.sock".to_string()],
        max_body: 1 << 20,
        read_timeout: 60,
        access_log: Some(PathBuf::from("/dev/stdout")),
        user: None,
        max_temp_file: config::DEFAULT_MAX_TEMP_FILE,
        files: config::FileOptions::default(),
        upstream: Default::default(),
    };
    let examples = repo_root().join("book").join("examples");
    let files = [
        (
            examples.join("nginx.conf"),
            config::nginx_conf_with(LAB_HEADER, &lab),
        ),
        (examples.join("uwsgi_params"), config::uwsgi_params()),
    ];
    let write = std::env::var_os("WSGI_COURSE_WRITE_EXAMPLES").is_some_and(|v| v == "1");
    for (path, expected) in files {
        if write {
            fs::write(&path, &expected)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        }
        let actual = fs::read_to_string(&path).unwrap_or_default();
        assert!(
            actual == expected,
            "{} is not what stage 5's generator writes for the lab; \
             WSGI_COURSE_WRITE_EXAMPLES=1 cargo test --test book writes it again. \
             It should be:\n{expected}",
            shown(&path)
        );
    }
}

/// One `$ ls …` or `$ wc -l …` shown in a `console` block of the book, with
/// the output printed under it.
struct ShownListing {
    place: String,
    command: String,
    output: String,
}

/// The console blocks that list the workspace's own files: `ls` or `wc -l`
/// of relative paths (listings of /tmp or of a student's machine are
/// examples of a run, not of this tree).
fn workspace_listings(chapter: &Path, text: &str) -> Vec<ShownListing> {
    let mut found = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let is_listing = line
            .strip_prefix("$ ")
            .map(|cmd| {
                let mut words = cmd.split_whitespace();
                let tool = words.next();
                let args: Vec<&str> = words.collect();
                let relative = args
                    .iter()
                    .filter(|a| !a.starts_with('-'))
                    .all(|a| !a.starts_with('/') && !a.starts_with('~'));
                match tool {
                    Some("ls") => relative && args.iter().all(|a| !a.starts_with('-')),
                    Some("wc") => relative && args.first() == Some(&"-l"),
                    _ => false,
                }
            })
            .unwrap_or(false);
        if !is_listing {
            i += 1;
            continue;
        }
        let mut output = String::new();
        let mut j = i + 1;
        while j < lines.len() && !lines[j].starts_with("```") && !lines[j].starts_with("$ ") {
            output.push_str(lines[j]);
            output.push('\n');
            j += 1;
        }
        found.push(ShownListing {
            place: format!("{}:{}", shown(chapter), i + 1),
            command: line[2..].to_string(),
            output,
        });
        i = j;
    }
    found
}

/// What a listing says, independent of layout: `ls -C` fills columns to
/// the terminal's width, so only the words count, sorted; `target` is
/// there once something was built and is never required.
fn listing_words(text: &str) -> Vec<String> {
    let mut words: Vec<String> = text
        .split_whitespace()
        .filter(|w| *w != "target")
        .map(str::to_string)
        .collect();
    words.sort();
    words
}

#[test]
fn the_workspace_listings_in_the_book_are_the_workspace() {
    // `ls` of the tree and `wc -l` of a stage drift silently as files are
    // added and grow; run them again and compare.
    let src = book_src();
    let mut problems = Vec::new();
    let mut checked = 0;
    for chapter in markdown_files(&src) {
        for listing in workspace_listings(&chapter, &read(&chapter)) {
            checked += 1;
            let out = Command::new("sh")
                .arg("-c")
                .arg(&listing.command)
                .current_dir(repo_root())
                .env("LC_ALL", "C")
                .output()
                .expect("sh runs");
            let now = String::from_utf8_lossy(&out.stdout);
            if listing_words(&now) != listing_words(&listing.output) {
                problems.push(format!(
                    "{}: `{}` shows\n{}  but prints now\n{}",
                    listing.place, listing.command, listing.output, now
                ));
            }
        }
    }
    assert!(
        checked >= 3,
        "expected the workspace chapter's listings, found {checked}"
    );
    assert!(
        problems.is_empty(),
        "{} listing(s) in the book no longer match the tree:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn cargo_run_p_starts_every_stage() {
    // The book and README say `cargo run -p stageN-...`: a package with a
    // second binary (stage 5's `cluster`) needs `default-run`, or cargo
    // refuses with "could not determine which binary to run".
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(repo_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut stages = 0;
    let mut problems = Vec::new();
    for package in meta["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().unwrap_or_default();
        if !name.starts_with("stage") {
            continue;
        }
        stages += 1;
        let bins: Vec<&str> = package["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "bin"))
            })
            .filter_map(|t| t["name"].as_str())
            .collect();
        let runs = match package["default_run"].as_str() {
            Some(default) => bins.contains(&default).then_some(default),
            None if bins.len() == 1 => Some(bins[0]),
            None => None,
        };
        if runs != Some(name) {
            problems.push(format!(
                "`cargo run -p {name}` runs {runs:?} (binaries: {bins:?})"
            ));
        }
    }
    assert_eq!(stages, 6, "six stage packages");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_page_shows_a_developers_checkout() {
    // Outputs pasted from a run show the path of the tree they ran in; the
    // book shows a reader's (/home/student/wsgi-course), never ours.
    let mut found = Vec::new();
    for chapter in markdown_files(&book_src()) {
        for (n, line) in read(&chapter).lines().enumerate() {
            if line.contains("/work/main/") || line.contains("/work/wt-") {
                found.push(format!("{}:{}: {line}", shown(&chapter), n + 1));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
