//! `--ini FILE`: the uWSGI ini file a course's notes ship, read by stage 5.
//!
//! uWSGI's own ini file describes both the app and the socket nginx talks
//! to. Behind stage 5 the socket is stage 5's business (it makes one in its
//! run directory and writes nginx's `uwsgi_pass` for it), so the socket's
//! settings are left out, with a warning that says so. Everything else is
//! the app and its workers, and goes to stage 4:
//!
//! - settings stage 5 has flags for (`module`, `processes`, `threads`,
//!   `harakiri`, ...) become those flags, because nginx must hear of some of
//!   them too: `harakiri` sets how long nginx waits for an answer;
//! - the rest (`callable`, `max-requests`, ...) is passed to stage 4 as its
//!   own flags, unread here.
//!
//! As in uWSGI, a flag on the command line wins over the file.

use std::path::Path;

use clap::ArgMatches;
use clap::parser::ValueSource;
use stage4_uwsgi_socket::ini::{self, Setting};
use wsgi_bridge::embed::StartError;

use crate::Args;

/// The settings about the socket nginx connects to: stage 5 makes that one.
const SOCKET_SETTINGS: &[&str] = &[
    "socket",
    "uwsgi-socket",
    "http",
    "chmod-socket",
    "chown-socket",
    "listen",
];

/// What reading the file left to do: flags for stage 4 that stage 5 does
/// not know, and the warnings to log once logging is up.
#[derive(Debug, Default)]
pub struct FromIni {
    pub stage4_flags: Vec<String>,
    pub warnings: Vec<String>,
}

// ANCHOR: apply
/// Fills `args` from the ini file where the command line said nothing.
pub fn apply(args: &mut Args, matches: &ArgMatches, path: &Path) -> Result<FromIni, StartError> {
    let settings = ini::read(path).map_err(StartError::new)?;
    let given = |id: &str| {
        matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    // The app named on the command line (not a bare FILE.ini: main took
    // that out of `args.app`) wins over the file's.
    let app_given = args.app.is_some() || given("wsgi_file");
    let shown = path.display();
    let mut out = FromIni::default();
    for Setting { key, value } in settings {
        let text = || {
            value
                .clone()
                .ok_or_else(|| StartError::new(format!("{shown}: `{key}` needs a value")))
        };
        let number = |what: &str| -> Result<u64, StartError> {
            let v = text()?;
            v.parse().map_err(|_| {
                StartError::new(format!("{shown}: `{key} = {v}`: {what} must be a number"))
            })
        };
        match key.as_str() {
            "module" if !app_given => args.app = Some(text()?),
            "wsgi-file" if !app_given => args.wsgi_file = Some(text()?.into()),
            "chdir" if !given("chdir") => args.chdir = Some(text()?.into()),
            "pythonpath" if !given("pythonpath") => args.pythonpath.push(text()?.into()),
            "virtualenv" | "home" if !given("virtualenv") => args.virtualenv = Some(text()?.into()),
            "processes" | "workers" if !given("workers") => {
                args.workers = number("the number of processes")? as usize
            }
            "threads" if !given("threads") => {
                args.threads = number("the number of threads")? as usize
            }
            "harakiri" if !given("harakiri") => args.harakiri = number("harakiri")?,
            "buffer-size" if !given("buffer_size") => {
                args.buffer_size = u16::try_from(number("the buffer size")?).map_err(|_| {
                    StartError::new(format!("{shown}: `buffer-size` is at most 65535"))
                })?
            }
            "limit-request-body" if !given("limit_request_body") => {
                args.limit_request_body = number("the body limit")?
            }
            "lazy-apps" => args.lazy_apps = true,
            // Given on the command line: it wins.
            "module" | "wsgi-file" | "chdir" | "pythonpath" | "virtualenv" | "home"
            | "processes" | "workers" | "threads" | "harakiri" | "buffer-size"
            | "limit-request-body" => {}
            // What stage 5 runs stage 4 with anyway.
            // What stage 5 runs stage 4 with anyway (and its run directory,
            // socket included, is removed at exit: uWSGI's vacuum).
            "master" | "enable-threads" | "die-on-term" | "vacuum" => {}
            key if SOCKET_SETTINGS.contains(&key) => out.warnings.push(format!(
                "{shown}: `{key}` is not used: stage 5 makes the socket nginx connects to"
            )),
            // Stage 4 reads the rest (and refuses what it does not know).
            _ => {
                out.stage4_flags.push(format!("--{key}"));
                out.stage4_flags.extend(value);
            }
        }
    }
    Ok(out)
}
// ANCHOR_END: apply
