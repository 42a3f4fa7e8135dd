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
        &["-c", "--config"],
        "this stage reads no configuration file yet: give the settings as flags (stage3-prefork --help lists them)",
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
    }
}
