//! gunicorn's flags that this course's stage 3 does not have, and what to
//! use instead: one sentence each, rather than clap's generic "unexpected
//! argument" (whose tip, `--reload` → "a similar argument exists:
//! '--preload'", would send a student the opposite way).

/// Flags, and what to say about them.
const NOT_HERE: &[(&[&str], &str)] = &[
    (
        &["-D", "--daemon"],
        "the course's servers stay in the foreground: run it under systemd or supervisord (as a container's PID 1 would), or with `&` in a shell",
    ),
    (
        &[
            "--certfile",
            "--keyfile",
            "--ca-certs",
            "--ssl-version",
            "--cert-reqs",
            "--ciphers",
        ],
        "the course's servers speak plain HTTP: put nginx in front (stage 5) to terminate TLS",
    ),
    (
        &["--statsd-host", "--statsd-prefix", "--dogstatsd-tags"],
        "there is no statsd client here: --stats ADDRESS serves the master's and workers' figures as JSON (curl it)",
    ),
    (
        &["--reload-engine", "--reload-extra-file"],
        "--reload watches the app's imported modules with inotify, and nothing else: there is no other engine, nor extra files",
    ),
    (
        &["--proxy-allow-from", "--proxy-protocol"],
        "the PROXY protocol is not read here: --forwarded-allow-ips and --proxy-headers take the scheme and the client's address from X-Forwarded-* headers",
    ),
    (
        &["-u", "--user", "-g", "--group", "--umask", "--initgroups"],
        "the server runs as the user who starts it: start it as that user (sudo -u, systemd's User=)",
    ),
    (
        &["--paste", "--paster"],
        "PasteDeploy files are not read here: give the app as MODULE:CALLABLE",
    ),
    (
        &[
            "--error-logfile",
            "--log-file",
            "--log-config",
            "--log-syslog",
            "--syslog-addr",
        ],
        "the error log is stderr, in gunicorn's format: redirect it (2>> FILE) or let systemd's journal collect it",
    ),
    (
        &["--worker-tmp-dir"],
        "workers report to the master through shared memory, not temporary files: there is nothing to set",
    ),
];

/// The same settings as names in a configuration file (`daemon = True`),
/// with the flag whose sentence they get.
const SETTINGS: &[(&str, &str)] = &[
    ("daemon", "--daemon"),
    ("certfile", "--certfile"),
    ("keyfile", "--keyfile"),
    ("ca_certs", "--ca-certs"),
    ("ssl_version", "--ssl-version"),
    ("cert_reqs", "--cert-reqs"),
    ("ciphers", "--ciphers"),
    ("ssl_context", "--certfile"),
    ("statsd_host", "--statsd-host"),
    ("statsd_prefix", "--statsd-prefix"),
    ("dogstatsd_tags", "--dogstatsd-tags"),
    ("reload_engine", "--reload-engine"),
    ("reload_extra_files", "--reload-extra-file"),
    ("proxy_allow_ips", "--proxy-allow-from"),
    ("proxy_protocol", "--proxy-protocol"),
    ("user", "--user"),
    ("group", "--group"),
    ("umask", "--umask"),
    ("initgroups", "--initgroups"),
    ("paste", "--paste"),
    ("errorlog", "--error-logfile"),
    ("logconfig", "--log-config"),
    ("syslog", "--log-syslog"),
    ("syslog_addr", "--syslog-addr"),
    ("worker_tmp_dir", "--worker-tmp-dir"),
];

/// The sentence for a setting of a configuration file that stage 3 does not
/// have, when it is one of gunicorn's flags above: the flag's sentence, with
/// the setting's name.
pub fn setting_refusal(name: &str) -> Option<String> {
    let (_, flag) = SETTINGS.iter().find(|(setting, _)| *setting == name)?;
    let (_, instead) = NOT_HERE.iter().find(|(flags, _)| flags.contains(flag))?;
    Some(format!(
        "{name} is gunicorn's, not this course's: {instead}"
    ))
}

/// The sentence for the first gunicorn flag in `args` that stage 3 does not
/// have, if any (`--flag`, `--flag=value`; nothing after `--`).
pub fn refusal(args: &[String]) -> Option<String> {
    for arg in args.iter().skip(1).take_while(|a| *a != "--") {
        let name = arg.split_once('=').map_or(arg.as_str(), |(n, _)| n);
        if let Some((_, instead)) = NOT_HERE.iter().find(|(flags, _)| flags.contains(&name)) {
            return Some(format!(
                "{name} is gunicorn's, not this course's: {instead}"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        std::iter::once("stage3-prefork")
            .chain(a.iter().copied())
            .map(String::from)
            .collect()
    }

    #[test]
    fn known_gunicorn_flags_get_a_sentence() {
        assert!(
            refusal(&args(&["apps.lab:app", "--daemon"]))
                .unwrap()
                .starts_with("--daemon is gunicorn's")
        );
        assert!(
            refusal(&args(&["--certfile=x.pem"]))
                .unwrap()
                .contains("nginx")
        );
        assert!(
            refusal(&args(&["--reload-engine=poll"]))
                .unwrap()
                .contains("inotify")
        );
        assert_eq!(refusal(&args(&["--reload"])), None);
        assert_eq!(
            refusal(&args(&["apps.lab:app", "-w", "2", "--preload"])),
            None
        );
        assert_eq!(refusal(&args(&["--", "--daemon"])), None);
        assert_eq!(refusal(&args(&["-c", "gunicorn.conf.py"])), None);
    }

    #[test]
    fn every_setting_names_a_refused_flag() {
        for (setting, _) in SETTINGS {
            assert!(setting_refusal(setting).is_some(), "{setting}");
        }
        assert!(
            setting_refusal("daemon")
                .unwrap()
                .starts_with("daemon is gunicorn's")
        );
        assert_eq!(setting_refusal("workers"), None);
    }
}
