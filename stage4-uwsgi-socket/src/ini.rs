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

/// One `key = value` line of the `[uwsgi]` section: the key as a flag name
/// (`chmod_socket` is `chmod-socket`), the value with `%d` and `%n`
/// replaced; `None` for a switch that is on (`master = true`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: Option<String>,
}

/// The settings of an ini file's `[uwsgi]` section, in the file's order;
/// a switch that is off is left out.
pub fn read(path: &Path) -> Result<Vec<Setting>, String> {
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

/// The flags an ini file stands for, as command-line arguments.
pub fn to_args(path: &Path) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    for setting in read(path)? {
        args.push(format!("--{}", setting.key));
        args.extend(setting.value);
    }
    Ok(args)
}

fn parse(text: &str, dir: &str, name: &str) -> Result<Vec<Setting>, String> {
    let mut settings = Vec::new();
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
            "true" | "yes" | "on" | "1" if is_switch(&key) => {
                settings.push(Setting { key, value: None })
            }
            "false" | "no" | "off" | "0" if is_switch(&key) => {}
            _ => settings.push(Setting {
                key,
                value: Some(value),
            }),
        }
    }
    Ok(settings)
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
        let args: Vec<String> = parse(text, "/srv/site/", "app")
            .unwrap()
            .into_iter()
            .flat_map(|s| std::iter::once(format!("--{}", s.key)).chain(s.value))
            .collect();
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
