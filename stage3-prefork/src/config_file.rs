//! gunicorn's configuration file: a Python file the master runs (`-c FILE`,
//! or `./gunicorn.conf.py` when there is one), whose module-level names are
//! settings (`workers = 3`, `bind = ["127.0.0.1:8000"]`) and server hooks
//! (`def when_ready(server): ...`, see [`crate::server_hooks`]).
//!
//! A setting is a flag under another spelling: `workers = 3` means
//! `--workers=3`, `preload_app = True` means `--preload`. So the file's
//! settings are turned into those flags and read by the same parser as the
//! command line, before it: whatever a flag is checked for, the setting is
//! too, and a flag given on the command line wins. Where a setting comes
//! from, weakest first (gunicorn's order):
//!
//! 1. the configuration file;
//! 2. the `GUNICORN_CMD_ARGS` environment variable (flags, as typed);
//! 3. the command line.
//!
//! Names the file defines that are not settings are its own business
//! (`import multiprocessing`, helper variables): ignored, as gunicorn
//! ignores them. A gunicorn setting this stage lacks gets a warning, or,
//! when it asks for something the course's servers refuse (`daemon =
//! True`, `certfile = ...`), the same sentence as the flag would.

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyList, PyString, PyTuple};
use wsgi_bridge::embed::StartError;

use crate::config::Args;
use crate::server_hooks::{HOOKS, ServerHooks};

/// The file read when none is named.
pub const DEFAULT_FILE: &str = "gunicorn.conf.py";

// ANCHOR: names
/// gunicorn's names for the settings whose flag is spelt otherwise; every
/// other flag is a setting under its own name, with underscores
/// (`--max-requests` is `max_requests`).
const GUNICORN_NAMES: &[(&str, &str)] = &[
    ("wsgi_app", "app"),
    ("keepalive", "keep_alive"),
    ("preload_app", "preload"),
    ("pidfile", "pid"),
    ("accesslog", "access_logfile"),
    ("loglevel", "log_level"),
];
// ANCHOR_END: names

/// gunicorn's settings that stage 3 does not have, and that change nothing
/// its lessons depend on: a warning, and the server starts. (Those it
/// refuses are in [`crate::unsupported`].)
const LACKING: &[&str] = &[
    "access_log_format",
    "backlog",
    "capture_output",
    "casefold_http_method",
    "default_proc_name",
    "disable_redirect_access_to_syslog",
    "do_handshake_on_connect",
    "enable_stdio_inheritance",
    "forwarder_headers",
    "header_map",
    "logconfig_dict",
    "logconfig_json",
    "logger_class",
    "permit_obsolete_folding",
    "permit_unconventional_http_method",
    "permit_unconventional_http_version",
    "proc_name",
    "raw_env",
    "raw_paste_global_conf",
    "secure_scheme_headers",
    "sendfile",
    "spew",
    "strip_header_spaces",
    "suppress_ragged_eofs",
    "syslog_facility",
    "syslog_prefix",
    "tmp_upload_dir",
];

/// Flags that are not settings of a file.
const NOT_SETTINGS: &[&str] = &["config", "help", "version"];

/// The command line, read with the configuration file and
/// `GUNICORN_CMD_ARGS`.
pub struct CommandLine {
    pub args: Args,
    /// The configuration file read, if any.
    pub file: Option<String>,
    /// Its hooks, if it defines any.
    pub hooks: Option<ServerHooks>,
    /// Things to say once the log is set up (settings ignored).
    pub warnings: Vec<String>,
    /// What the parser made of it all, for --print-config.
    matches: ArgMatches,
}

impl CommandLine {
    // ANCHOR: read
    /// Reads `argv` (the program's name first). A mistake on the command
    /// line is clap's to explain (and exits, as `--help` does); one in the
    /// file or in GUNICORN_CMD_ARGS is returned.
    pub fn read(argv: Vec<OsString>) -> Result<CommandLine, StartError> {
        let command = Args::command();
        let mut argv = argv.into_iter();
        let program = argv.next().unwrap_or_else(|| "stage3-prefork".into());
        let cli: Vec<OsString> = argv.collect();
        let cli_matches = command
            .clone()
            .get_matches_from(std::iter::once(program.clone()).chain(cli.iter().cloned()));
        let on_cli = |id: &str| cli_matches.value_source(id) == Some(ValueSource::CommandLine);

        // GUNICORN_CMD_ARGS: flags, split as a shell would; those the
        // command line gives again are left out.
        let env_words = cmd_args_from_env()?;
        let env_matches = command
            .clone()
            .try_get_matches_from(std::iter::once(program.clone()).chain(env_words))
            .map_err(|e| StartError::new(format!("GUNICORN_CMD_ARGS: {}", clap_sentence(&e))))?;
        let in_env = |id: &str| env_matches.value_source(id) == Some(ValueSource::CommandLine);

        // The file: named by -c (on the command line, else in the
        // environment), else ./gunicorn.conf.py if it exists.
        let location = [&cli_matches, &env_matches]
            .iter()
            .find_map(|m| m.get_one::<String>("config").cloned())
            .or_else(|| {
                Path::new(DEFAULT_FILE)
                    .is_file()
                    .then(|| DEFAULT_FILE.to_string())
            });
        let mut file_flags = Vec::new();
        let mut hooks = None;
        let mut warnings = Vec::new();
        if let Some(location) = &location {
            let settings = read_file(location)?;
            let given = |id: &str| on_cli(id) || in_env(id);
            let found =
                settings.apply(&command, &program, given, &mut file_flags, &mut warnings)?;
            hooks = found;
        }

        let all = std::iter::once(program)
            .chain(file_flags)
            .chain(flags_given(&command, &env_matches, |id| !on_cli(id)))
            .chain(cli);
        let matches = command.try_get_matches_from(all).map_err(|e| {
            StartError::new(format!(
                "{}: {}",
                location.as_deref().unwrap_or("GUNICORN_CMD_ARGS"),
                clap_sentence(&e)
            ))
        })?;
        let args =
            Args::from_arg_matches(&matches).map_err(|e| StartError::new(clap_sentence(&e)))?;
        Ok(CommandLine {
            args,
            file: location,
            hooks,
            warnings,
            matches,
        })
    }
    // ANCHOR_END: read

    // ANCHOR: print_config
    /// `--print-config`: every setting, by gunicorn's name where it has one,
    /// with its value as resolved; then the hooks the file defines.
    pub fn print_config(&self) -> String {
        let command = Args::command();
        let mut lines: Vec<(String, String)> = settings(&command)
            .map(|(name, arg)| (name, self.resolved(arg)))
            .collect();
        for (name, _) in HOOKS {
            let defined = self.hooks.as_ref().and_then(|h| {
                h.describe()
                    .into_iter()
                    .find(|(hook, _)| hook == name)
                    .map(|(_, text)| text)
            });
            lines.push((name.to_string(), defined.unwrap_or_else(|| "None".into())));
        }
        lines.push((
            "config".into(),
            self.file.clone().unwrap_or_else(|| "None".into()),
        ));
        lines.sort();
        let width = lines.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        lines
            .iter()
            .map(|(name, value)| format!("{name:width$} = {value}\n"))
            .collect()
    }
    // ANCHOR_END: print_config

    /// A setting's value as the parser resolved it, written as Python would.
    fn resolved(&self, arg: &Arg) -> String {
        let id = arg.get_id().as_str();
        let values: Vec<String> = self
            .matches
            .get_raw(id)
            .map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        match arg.get_action() {
            ArgAction::SetTrue => {
                if self.matches.get_flag(id) {
                    "True".into()
                } else {
                    "False".into()
                }
            }
            ArgAction::Append => {
                let quoted: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
                format!("[{}]", quoted.join(", "))
            }
            _ => match values.first() {
                Some(value) => value.clone(),
                // The one setting whose default is computed, not written.
                None if id == "workers" => crate::config::default_workers().to_string(),
                None => "None".into(),
            },
        }
    }
}

/// Every flag that is a setting of the file, with its name there.
fn settings(command: &Command) -> impl Iterator<Item = (String, &Arg)> {
    command
        .get_arguments()
        .filter(|arg| !NOT_SETTINGS.contains(&arg.get_id().as_str()))
        .map(|arg| {
            let id = arg.get_id().as_str();
            let name = GUNICORN_NAMES
                .iter()
                .find(|(_, flag)| *flag == id)
                .map_or(id, |(name, _)| name);
            (name.to_string(), arg)
        })
}

/// The flag a file's setting stands for, if it is one.
fn setting<'c>(command: &'c Command, name: &str) -> Option<&'c Arg> {
    settings(command)
        .find(|(n, _)| n == name)
        .map(|(_, arg)| arg)
}

/// The flags `matches` says were typed, for the ids `keep` accepts, written
/// out again (`--workers=3`): how GUNICORN_CMD_ARGS joins the command line.
fn flags_given(
    command: &Command,
    matches: &ArgMatches,
    keep: impl Fn(&str) -> bool,
) -> Vec<OsString> {
    let mut flags = Vec::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if matches.value_source(id) != Some(ValueSource::CommandLine) || !keep(id) {
            continue;
        }
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        flags.extend(written_as_flags(arg, &values));
    }
    flags
}

/// `values` of `arg` as command-line words: `--name=value` each, `--name`
/// for a switch that is on, the bare value for the app.
fn written_as_flags(arg: &Arg, values: &[String]) -> Vec<OsString> {
    if arg.is_positional() {
        return values.iter().map(OsString::from).collect();
    }
    let long = arg.get_long().unwrap_or_default();
    match arg.get_action() {
        ArgAction::SetTrue => match values.first().map(String::as_str) {
            Some("true") => vec![format!("--{long}").into()],
            _ => Vec::new(),
        },
        _ => values
            .iter()
            .map(|v| format!("--{long}={v}").into())
            .collect(),
    }
}

/// The first line of clap's message, without its `error: `.
fn clap_sentence(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// GUNICORN_CMD_ARGS split into words as a shell would (quotes group).
fn cmd_args_from_env() -> Result<Vec<OsString>, StartError> {
    let Ok(text) = std::env::var("GUNICORN_CMD_ARGS") else {
        return Ok(Vec::new());
    };
    shell_words(&text)
        .map(|words| words.into_iter().map(OsString::from).collect())
        .ok_or_else(|| StartError::new("GUNICORN_CMD_ARGS has a quote that is never closed"))
}

/// Splits `text` at blanks, keeping what is between quotes together, as
/// Python's `shlex.split` (which gunicorn uses) does for these simple
/// cases. `None` when a quote is not closed.
fn shell_words(text: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        q if q == c => break,
                        '\\' if c == '"' => w.push(chars.next()?),
                        other => w.push(other),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).push(chars.next()?),
            c if c.is_whitespace() => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Some(words)
}

// ANCHOR: read_file
/// The file, run: the names it defined. It runs in this process, the
/// master, so from here on the master holds Python (as with `--preload`).
fn read_file(location: &str) -> Result<FileSettings, StartError> {
    Python::initialize();
    Python::attach(|py| {
        let namespace = match location.strip_prefix("python:") {
            Some(module) => import_module(py, module),
            None => run_file(py, location),
        }?;
        Ok(FileSettings {
            location: location.to_string(),
            namespace: namespace.unbind(),
        })
    })
}

/// Runs the file as gunicorn does: compiled under its own name (so that a
/// traceback points at the file and line), in a fresh namespace whose
/// `__name__` is `__config__`.
fn run_file<'py>(py: Python<'py>, location: &str) -> Result<Bound<'py, PyDict>, StartError> {
    let source = std::fs::read_to_string(location).map_err(|e| {
        StartError::new(format!(
            "cannot read the configuration file {location}: {e}"
        ))
    })?;
    let run = || -> PyResult<Bound<'py, PyDict>> {
        let namespace = PyDict::new(py);
        namespace.set_item("__file__", location)?;
        namespace.set_item("__name__", "__config__")?;
        let builtins = py.import("builtins")?;
        let code = builtins.call_method1("compile", (source, location, "exec"))?;
        builtins.call_method1("exec", (code, &namespace))?;
        Ok(namespace)
    };
    run().map_err(|e| {
        StartError::with_python(
            format!("cannot run the configuration file {location}"),
            py,
            &e,
        )
    })
}

/// `-c python:package.module`: a module to import instead of a file. It is
/// looked for in the current directory too, as gunicorn does, for this
/// import only (the workers set sys.path up themselves).
fn import_module<'py>(py: Python<'py>, module: &str) -> Result<Bound<'py, PyDict>, StartError> {
    let here = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let import = || -> PyResult<Bound<'py, PyDict>> {
        let sys_path = py.import("sys")?.getattr("path")?;
        sys_path.call_method1("insert", (0, &here))?;
        let imported = py.import(module);
        sys_path.call_method1("remove", (&here,))?;
        imported?.dict().copy()
    };
    import().map_err(|e| {
        StartError::with_python(
            format!("cannot import the configuration module {module}"),
            py,
            &e,
        )
    })
}
// ANCHOR_END: read_file

/// The names a configuration file defined.
struct FileSettings {
    location: String,
    namespace: Py<PyDict>,
}

impl FileSettings {
    // ANCHOR: apply
    /// Sorts the file's names: settings become flags (in `flags`, unless
    /// `given` says the command line or GUNICORN_CMD_ARGS has them), hooks
    /// are checked and returned, the rest is ignored or warned about.
    fn apply(
        &self,
        command: &Command,
        program: &OsString,
        given: impl Fn(&str) -> bool,
        flags: &mut Vec<OsString>,
        warnings: &mut Vec<String>,
    ) -> Result<Option<ServerHooks>, StartError> {
        let file = &self.location;
        Python::attach(|py| {
            let mut hooks = Vec::new();
            for (key, value) in self.namespace.bind(py).iter() {
                let Ok(name) = key.extract::<String>() else {
                    continue;
                };
                if value.is_none() {
                    continue; // None: the default, as in gunicorn.
                }
                if let Some((hook, arity)) = HOOKS.iter().find(|(h, _)| *h == name) {
                    hooks.push((*hook, checked_hook(py, file, hook, *arity, &value)?));
                } else if let Some(arg) = setting(command, &name) {
                    if given(arg.get_id().as_str()) {
                        continue;
                    }
                    let words = written_as_flags(arg, &setting_values(file, &name, arg, &value)?);
                    // Each setting is parsed alone first, so that a bad one
                    // is named in the message.
                    command
                        .clone()
                        .try_get_matches_from(std::iter::once(program.clone()).chain(words.clone()))
                        .map_err(|e| {
                            StartError::new(format!(
                                "{file}: {name} = {}: {}",
                                python_repr(&value),
                                clap_sentence(&e)
                            ))
                        })?;
                    flags.extend(words);
                } else if let Some(sentence) = crate::unsupported::setting_refusal(&name) {
                    if value.is_truthy().unwrap_or(true) {
                        return Err(StartError::new(format!("{file}: {sentence}")));
                    }
                } else if LACKING.contains(&name.as_str()) {
                    warnings.push(format!(
                        "{file}: {name} is a gunicorn setting this stage does not have: ignored"
                    ));
                }
            }
            if hooks.is_empty() {
                return Ok(None);
            }
            ServerHooks::new(py, hooks)
                .map(Some)
                .map_err(|e| StartError::with_python("cannot prepare the server hooks", py, &e))
        })
    }
    // ANCHOR_END: apply
}

/// A setting's Python value as the flag's values (each becomes
/// `--flag=value`): a switch takes True or False, `bind` and the other
/// repeatable flags a string or a list of them, the rest a number or a
/// string.
fn setting_values(
    file: &str,
    name: &str,
    arg: &Arg,
    value: &Bound<'_, PyAny>,
) -> Result<Vec<String>, StartError> {
    let wrong = |what: &str| {
        StartError::new(format!(
            "{file}: {name} = {}: {name} takes {what}",
            python_repr(value)
        ))
    };
    let scalar = |v: &Bound<'_, PyAny>| -> Option<String> {
        if v.is_instance_of::<PyBool>() {
            None
        } else if v.is_instance_of::<PyInt>() || v.is_instance_of::<PyString>() {
            v.str().ok().map(|s| s.to_string())
        } else {
            None
        }
    };
    let repeatable = matches!(arg.get_action(), ArgAction::Append);
    match arg.get_action() {
        ArgAction::SetTrue => match value.cast::<PyBool>() {
            Ok(b) if b.is_true() => Ok(vec!["true".into()]),
            Ok(_) => Ok(Vec::new()),
            Err(_) => Err(wrong("True or False")),
        },
        _ if repeatable
            && (value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>()) =>
        {
            let mut out = Vec::new();
            for item in value.try_iter().map_err(|_| wrong("a list of strings"))? {
                let item = item.map_err(|_| wrong("a list of strings"))?;
                out.push(scalar(&item).ok_or_else(|| wrong("a list of strings"))?);
            }
            Ok(out)
        }
        _ => {
            let text = scalar(value).ok_or_else(|| wrong("a number or a string"))?;
            Ok(vec![gunicorn_spelling(arg.get_id().as_str(), text)])
        }
    }
}

/// Values gunicorn takes that this stage's flags spell otherwise.
fn gunicorn_spelling(id: &str, text: String) -> String {
    match (id, text.as_str()) {
        ("worker_class", "gunicorn.workers.sync.SyncWorker") => "sync".into(),
        ("worker_class", "gunicorn.workers.gthread.ThreadWorker") => "gthread".into(),
        ("worker_class", "uvicorn.workers.UvicornWorker" | "uvicorn_worker.UvicornWorker") => {
            "asgi".into()
        }
        ("log_level", _) => text.to_lowercase(),
        _ => text,
    }
}

/// A hook of the file, checked as gunicorn checks it: callable (or a
/// "module.function" string, imported), taking as many arguments as it
/// will be given.
fn checked_hook(
    py: Python<'_>,
    file: &str,
    name: &str,
    arity: usize,
    value: &Bound<'_, PyAny>,
) -> Result<Py<PyAny>, StartError> {
    let failed = |message: String, e: PyErr| StartError::with_python(message, py, &e);
    let hook = match value.extract::<String>() {
        Ok(path) => {
            let (module, object) = path.rsplit_once('.').ok_or_else(|| {
                StartError::new(format!(
                    "{file}: {name} = '{path}': a hook given as a string is 'module.function'"
                ))
            })?;
            py.import(module)
                .and_then(|m| m.getattr(object))
                .map_err(|e| failed(format!("{file}: {name} = '{path}' cannot be imported"), e))?
        }
        Err(_) => value.clone(),
    };
    if !hook.is_callable() {
        return Err(StartError::new(format!(
            "{file}: {name} = {} is not a function (a server hook is `def {name}(...)`)",
            python_repr(&hook)
        )));
    }
    let positional = positional_parameters(py, &hook)
        .map_err(|e| failed(format!("{file}: cannot read the parameters of {name}"), e))?;
    if positional != arity {
        let parameters = match name {
            "pre_fork" | "post_fork" | "child_exit" | "worker_exit" => "(server, worker)",
            "pre_request" => "(worker, req)",
            "post_request" => "(worker, req, environ, resp)",
            "nworkers_changed" => "(server, new_value, old_value)",
            "post_worker_init" | "worker_int" | "worker_abort" => "(worker)",
            _ => "(server)",
        };
        return Err(StartError::new(format!(
            "{file}: {name} takes {positional} argument{}, but it is called with {arity}: def {name}{parameters}",
            if positional == 1 { "" } else { "s" }
        )));
    }
    Ok(hook.unbind())
}

/// How many positional parameters `f` has (gunicorn's arity check).
fn positional_parameters(py: Python<'_>, f: &Bound<'_, PyAny>) -> PyResult<usize> {
    let inspect = py.import("inspect")?;
    let parameter = inspect.getattr("Parameter")?;
    let kinds = [
        parameter.getattr("POSITIONAL_ONLY")?,
        parameter.getattr("POSITIONAL_OR_KEYWORD")?,
    ];
    let signature = inspect.call_method1("signature", (f,))?;
    let mut n = 0;
    for p in signature
        .getattr("parameters")?
        .call_method0("values")?
        .try_iter()?
    {
        let kind = p?.getattr("kind")?;
        if kinds.iter().any(|k| k.eq(&kind).unwrap_or(false)) {
            n += 1;
        }
    }
    Ok(n)
}

fn python_repr(value: &Bound<'_, PyAny>) -> String {
    value
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_split_as_shlex() {
        assert_eq!(
            shell_words("-w 3  --bind '127.0.0.1:9000' \"a b\"").unwrap(),
            ["-w", "3", "--bind", "127.0.0.1:9000", "a b"]
        );
        assert_eq!(shell_words("").unwrap(), Vec::<String>::new());
        assert!(shell_words("'open").is_none());
    }

    #[test]
    fn every_flag_but_a_few_is_a_setting() {
        let command = Args::command();
        for name in [
            "bind",
            "workers",
            "worker_class",
            "preload_app",
            "accesslog",
            "keepalive",
        ] {
            assert!(setting(&command, name).is_some(), "{name}");
        }
        assert!(setting(&command, "preload").is_none());
        assert!(setting(&command, "config").is_none());
    }
}
