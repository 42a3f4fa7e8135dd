//! uWSGI's ini files: `uwsgi --ini app.ini`, or `uwsgi app.ini`.
//!
//! ```ini
//! [uwsgi]
//! module = apps.lab:app
//! socket = %dapp.sock         ; %d: the directory of this file
//! processes = 4
//! master = true
//! ```
//!
//! Each `key = value` of the `[uwsgi]` section is the flag `--key value`;
//! a boolean (`true`, `yes`, `on`, `1`) is the flag alone, and `false`
//! leaves it out. The file's flags come first, so that the command line,
//! read after them, wins. Magic variables, as uWSGI has them: `%d` (the
//! file's directory, absolute, with a trailing `/`: `%dapp.sock`) and `%n`
//! (the file's name without `.ini`).

use std::path::Path;

/// The flags an ini file stands for, as command-line arguments.
pub fn to_args(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the ini file {}: {e}", path.display()))?;
    let dir = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(|d| format!("{}/", d.display())))
        .unwrap_or_else(|| "./".to_string());
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    parse(&text, &dir, &name).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse(text: &str, dir: &str, name: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut in_uwsgi = false;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_uwsgi = section.trim() == "uwsgi";
            continue;
        }
        if !in_uwsgi {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "line {}: expected `key = value`: {line}",
                number + 1
            ));
        };
        let key = key.trim().replace('_', "-");
        let value = value.trim().replace("%d", dir).replace("%n", name);
        match value.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" if is_switch(&key) => args.push(format!("--{key}")),
            "false" | "no" | "off" | "0" if is_switch(&key) => {}
            _ => {
                args.push(format!("--{key}"));
                args.push(value);
            }
        }
    }
    Ok(args)
}

/// The flags that take no value.
fn is_switch(key: &str) -> bool {
    matches!(
        key,
        "master" | "lazy-apps" | "enable-threads" | "vacuum" | "die-on-term" | "show-config"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ini_file_is_its_flags() {
        let text = "\
# the app
[uwsgi]
module = apps.lab:app
socket = %d%n.sock   
processes = 4
master = true
lazy-apps = false
chmod_socket = 660
; another section is not ours
[other]
module = nope
";
        let args = parse(text, "/srv/site/", "app").unwrap();
        assert_eq!(
            args,
            [
                "--module",
                "apps.lab:app",
                "--socket",
                "/srv/site/app.sock",
                "--processes",
                "4",
                "--master",
                "--chmod-socket",
                "660"
            ]
        );
        assert!(parse("[uwsgi]\nnonsense\n", "/", "x").is_err());
    }
}
