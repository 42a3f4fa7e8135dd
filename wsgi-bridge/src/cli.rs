//! Command-line arguments every stage shares, with gunicorn's names.
//! A stage flattens these into its own `clap` parser and adds its own.

use std::path::PathBuf;

use crate::embed::{AppSource, PythonSetup, StartError};
use crate::http::request::Limits;
use crate::logging::LogLevel;

/// Which app to serve and where Python finds it.
#[derive(clap::Args, Clone, Debug)]
pub struct AppArgs {
    /// The WSGI app, as MODULE:CALLABLE (e.g. apps.lab:app). A bare MODULE
    /// means its `application`, then its `app`. Without it, a built-in hello app.
    #[arg(value_name = "APP")]
    pub app: Option<String>,

    /// Load the app from a Python file instead (uWSGI's --wsgi-file); its
    /// `application` or `app` is served.
    #[arg(long, value_name = "FILE", conflicts_with = "app")]
    pub wsgi_file: Option<PathBuf>,

    /// Change to this directory before loading the app; it goes first on sys.path.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub chdir: PathBuf,

    /// More directories to add to sys.path (comma-separated or repeated).
    #[arg(long, value_name = "DIRS", value_delimiter = ',')]
    pub pythonpath: Vec<PathBuf>,

    /// A virtualenv whose packages the app may import (default: $VIRTUAL_ENV).
    #[arg(long, value_name = "DIR", env = "VIRTUAL_ENV")]
    pub virtualenv: Option<PathBuf>,

    /// Where the app is mounted (SCRIPT_NAME), e.g. /app; empty for the root.
    #[arg(long, value_name = "PATH", default_value = "")]
    pub script_name: String,
}

impl AppArgs {
    pub fn source(&self) -> Result<AppSource, StartError> {
        match (&self.app, &self.wsgi_file) {
            (Some(spec), _) => AppSource::parse_spec(spec),
            (None, Some(path)) => Ok(AppSource::File {
                path: path.clone(),
                callable: None,
            }),
            (None, None) => Ok(AppSource::BuiltinHello),
        }
    }

    pub fn python_setup(&self) -> PythonSetup {
        PythonSetup {
            chdir: self.chdir.clone(),
            pythonpath: self.pythonpath.clone(),
            virtualenv: self.virtualenv.clone(),
        }
    }

    /// Resolves `--chdir`, `--pythonpath` and `--virtualenv` against the
    /// current directory, for a server that changes directory before it
    /// uses them (stage 3's master, then its workers).
    pub fn make_paths_absolute(&mut self) {
        let absolute =
            |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        self.chdir = absolute(&self.chdir);
        self.pythonpath = self.pythonpath.iter().map(|p| absolute(p)).collect();
        self.virtualenv = self.virtualenv.as_deref().map(absolute);
    }

    /// `SCRIPT_NAME` as PEP 3333 wants it: "" or a path without a trailing slash.
    pub fn script_name(&self) -> String {
        let s = self.script_name.trim_end_matches('/');
        if s.is_empty() || s.starts_with('/') {
            s.to_string()
        } else {
            format!("/{s}")
        }
    }
}

/// Request limits: what a server refuses before the app sees anything.
#[derive(clap::Args, Clone, Debug)]
pub struct LimitArgs {
    /// Longest request line accepted, in bytes (longer: 400); 0: no limit.
    #[arg(long, value_name = "BYTES", default_value_t = 4094)]
    pub limit_request_line: usize,

    /// Most header fields accepted in one request (more: 431).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit_request_fields: usize,

    /// Longest header field accepted, in bytes (longer: 431); 0: no limit.
    #[arg(
        long = "limit-request-field_size",
        alias = "limit-request-field-size",
        value_name = "BYTES",
        default_value_t = 8190
    )]
    pub limit_request_field_size: usize,

    /// Largest request body accepted, in bytes; 0 means no limit (larger: 413).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
    pub limit_request_body: u64,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        // 0 means "no limit", as in gunicorn.
        let unlimited_if_zero = |n: usize| if n == 0 { usize::MAX } else { n };
        Limits {
            max_request_line: unlimited_if_zero(self.limit_request_line),
            max_header_count: unlimited_if_zero(self.limit_request_fields),
            max_header_size: unlimited_if_zero(self.limit_request_field_size),
            max_body: self.limit_request_body,
        }
    }
}

/// Logging, as gunicorn's flags.
#[derive(clap::Args, Clone, Debug)]
pub struct LogArgs {
    /// How much to log on stderr.
    #[arg(long, value_enum, default_value = "info")]
    pub log_level: LogLevel,

    /// Write an access log line per request to FILE ('-' or no value: stdout).
    #[arg(long = "access-logfile", alias = "access-log", value_name = "FILE",
          num_args = 0..=1, default_missing_value = "-")]
    pub access_logfile: Option<String>,
}

impl LogArgs {
    /// Installs the loggers these flags ask for.
    pub fn install(&self) -> Result<(), StartError> {
        crate::logging::init(self.log_level);
        if let Some(target) = &self.access_logfile {
            let log = crate::logging::AccessLog::open(target).map_err(|e| {
                StartError::new(format!("cannot open the access log {target}: {e}"))
            })?;
            crate::logging::set_access_log(log);
        }
        Ok(())
    }
}
