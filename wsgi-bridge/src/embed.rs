//! Starting the embedded CPython and finding the WSGI app in it.
//!
//! The interpreter is the one pyo3 was built against (`PYO3_PYTHON`, or the
//! first `python3` on PATH at build time); each binary's build script sets an
//! rpath to that interpreter's `libpython`, so the same one is loaded at run
//! time with its own standard library and site-packages.

use std::ffi::CString;
use std::fmt;
use std::path::{Path, PathBuf};

use pyo3::prelude::*;
use pyo3::types::{PyList, PyModule};

/// The hello app every stage serves when it is given no app, compiled into the
/// binary so `cargo run -p stageN-…` works from any directory.
pub const HELLO_APP_SOURCE: &str = include_str!("../../apps/hello.py");

/// Where the app comes from: `module:callable` (gunicorn, uWSGI's `--module`)
/// or a file path (uWSGI's `--wsgi-file`), or the built-in hello app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppSource {
    Module {
        module: String,
        callable: Option<String>,
    },
    File {
        path: PathBuf,
        callable: Option<String>,
    },
    BuiltinHello,
}

impl AppSource {
    /// Parses `module:callable`; a bare module means `application`, then `app`.
    pub fn parse_spec(spec: &str) -> Result<AppSource, StartError> {
        let (module, callable) = match spec.split_once(':') {
            Some((m, c)) => (m.trim(), Some(c.trim())),
            None => (spec.trim(), None),
        };
        let valid_module = !module.is_empty() && module.split('.').all(is_identifier);
        if !valid_module {
            return Err(StartError::new(format!(
                "'{spec}' is not an app spec: expected MODULE or MODULE:CALLABLE, for example apps.lab:app"
            )));
        }
        if let Some(c) = callable {
            let name = c.strip_suffix("()").unwrap_or(c);
            if name.is_empty() || !name.split('.').all(is_identifier) {
                return Err(StartError::new(format!(
                    "'{spec}' is not an app spec: after ':' comes the name of the callable, \
                     for example apps.lab:app or myproject:create_app()"
                )));
            }
        }
        Ok(AppSource::Module {
            module: module.to_string(),
            callable: callable.map(str::to_string),
        })
    }

    /// A short name for the banner and errors.
    pub fn describe(&self) -> String {
        match self {
            AppSource::Module { module, callable } => match callable {
                Some(c) => format!("{module}:{c}"),
                None => module.clone(),
            },
            AppSource::File { path, callable } => match callable {
                Some(c) => format!("{}:{c}", path.display()),
                None => path.display().to_string(),
            },
            AppSource::BuiltinHello => "the built-in hello app".to_string(),
        }
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// A failure a user can cause at start-up (bad spec, import error, missing
/// callable): printed as one sentence, with the Python traceback when there
/// is one, and the server exits non-zero.
#[derive(Debug)]
pub struct StartError {
    pub message: String,
    pub traceback: Option<String>,
    /// The app's module was imported, but it has no app under that name, or
    /// what it has is not callable: gunicorn's `AppImportError`, which its
    /// workers report with an exit status of their own (4, "App failed to
    /// load.") where every other failure to boot is 3.
    pub app_not_found: bool,
}

impl StartError {
    pub fn new(message: impl Into<String>) -> StartError {
        StartError {
            message: message.into(),
            traceback: None,
            app_not_found: false,
        }
    }

    /// A failure that Python raised: the message, and its traceback.
    pub fn with_python(message: impl Into<String>, py: Python<'_>, err: &PyErr) -> StartError {
        StartError {
            traceback: Some(format_exception(py, err)),
            ..StartError::new(message)
        }
    }

    /// The module imported, and the app is not in it (see `app_not_found`).
    fn app_not_found(message: impl Into<String>) -> StartError {
        StartError {
            app_not_found: true,
            ..StartError::new(message)
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StartError {}

/// The Python traceback of `err`, as Python would print it.
pub fn format_exception(py: Python<'_>, err: &PyErr) -> String {
    let formatted = (|| -> PyResult<String> {
        let traceback = py.import("traceback")?;
        let lines = traceback.call_method1(
            "format_exception",
            (err.get_type(py), err.value(py), err.traceback(py)),
        )?;
        let text: Vec<String> = lines.extract()?;
        Ok(text.concat())
    })();
    formatted.unwrap_or_else(|_| format!("{err}\n"))
}

/// Where Python looks for the app and its packages.
#[derive(Clone, Debug, Default)]
pub struct PythonSetup {
    /// The app's directory, first on `sys.path` (gunicorn's `--chdir`).
    pub chdir: PathBuf,
    /// Extra directories, after it (`--pythonpath`).
    pub pythonpath: Vec<PathBuf>,
    /// A virtualenv whose site-packages to add (`--virtualenv`, `VIRTUAL_ENV`).
    pub virtualenv: Option<PathBuf>,
}

// ANCHOR: start_python
/// Starts the interpreter (once per process) and sets up `sys.path`.
///
/// The process's working directory becomes `setup.chdir`, as with gunicorn's
/// `--chdir`, so relative paths in the app mean what its author meant.
pub fn start_python(setup: &PythonSetup) -> Result<(), StartError> {
    if let Err(e) = std::env::set_current_dir(&setup.chdir) {
        return Err(StartError::new(format!(
            "cannot change to directory {}: {e}",
            setup.chdir.display()
        )));
    }
    let chdir = std::env::current_dir()
        .map_err(|e| StartError::new(format!("cannot read the current directory: {e}")))?;
    // Python's own signal handlers stay off (pyo3 initialises with
    // Py_InitializeEx(0)): the server, not the app, decides what SIGINT means.
    Python::initialize();
    Python::attach(|py| -> Result<(), StartError> {
        let sys = py
            .import("sys")
            .map_err(|e| StartError::with_python("cannot import sys", py, &e))?;
        let path = sys
            .getattr("path")
            .and_then(|p| p.cast_into::<PyList>().map_err(PyErr::from))
            .map_err(|e| StartError::with_python("sys.path is not a list", py, &e))?;
        if let Some(venv) = &setup.virtualenv {
            add_virtualenv(py, venv)?;
        }
        for (i, dir) in std::iter::once(&chdir)
            .chain(setup.pythonpath.iter())
            .enumerate()
        {
            let dir = if dir.is_absolute() {
                dir.clone()
            } else {
                chdir.join(dir)
            };
            path.insert(i, dir.to_string_lossy().as_ref())
                .map_err(|e| StartError::with_python("cannot change sys.path", py, &e))?;
        }
        Ok(())
    })
}
// ANCHOR_END: start_python

// ANCHOR: add_virtualenv
/// Adds a virtualenv's site-packages the way `site` does for an activated
/// one: an embedded interpreter does not look at `VIRTUAL_ENV` by itself.
fn add_virtualenv(py: Python<'_>, venv: &Path) -> Result<(), StartError> {
    let version = py.version_info();
    let site_packages = venv
        .join("lib")
        .join(format!("python{}.{}", version.major, version.minor))
        .join("site-packages");
    if !site_packages.is_dir() {
        return Err(StartError::new(format!(
            "the virtualenv {} has no {} (was it made with Python {}.{}, the Python this server embeds?)",
            venv.display(),
            site_packages.display(),
            version.major,
            version.minor
        )));
    }
    // site.addsitedir appends (and runs the .pth files there); an activated
    // virtualenv instead comes *before* the base Python's packages, so its
    // versions win. Move what was added to the front.
    let added = (|| -> PyResult<()> {
        let sys_path = py.import("sys")?.getattr("path")?.cast_into::<PyList>()?;
        let before = sys_path.len();
        py.import("site")?
            .call_method1("addsitedir", (site_packages.to_string_lossy().as_ref(),))?;
        let new_entries = sys_path.get_slice(before, sys_path.len());
        sys_path.del_slice(before, sys_path.len())?;
        for (i, entry) in new_entries.iter().enumerate() {
            sys_path.insert(i, entry)?;
        }
        Ok(())
    })();
    added.map_err(|e| StartError::with_python("cannot add the virtualenv's site-packages", py, &e))
}
// ANCHOR_END: add_virtualenv

/// Imports the app and returns the WSGI callable.
pub fn load_app(py: Python<'_>, source: &AppSource) -> Result<Py<PyAny>, StartError> {
    let (module, callable) = match source {
        AppSource::Module { module, callable } => (import_module(py, module)?, callable.as_deref()),
        AppSource::File { path, callable } => (import_file(py, path)?, callable.as_deref()),
        AppSource::BuiltinHello => {
            let code = CString::new(HELLO_APP_SOURCE).expect("hello.py has no NUL byte");
            let module = PyModule::from_code(py, &code, c"hello.py", c"hello")
                .map_err(|e| StartError::with_python("the built-in hello app failed", py, &e))?;
            (module, None)
        }
    };
    let what = source.describe();
    let app = match callable {
        Some(name) => find_callable(py, &module, name, &what)?,
        None => {
            let mut found = None;
            for name in ["application", "app"] {
                if let Ok(obj) = module.getattr(name) {
                    found = Some(obj);
                    break;
                }
            }
            found.ok_or_else(|| {
                StartError::app_not_found(format!(
                    "{what} has neither 'application' nor 'app': name the callable, as in {what}:my_app"
                ))
            })?
        }
    };
    if !app.is_callable() {
        return Err(StartError::app_not_found(format!(
            "the app in {what} is not callable (it is a {}): a WSGI app is a function or object called with (environ, start_response)",
            app.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        )));
    }
    Ok(app.unbind())
}

fn import_module<'py>(py: Python<'py>, module: &str) -> Result<Bound<'py, PyModule>, StartError> {
    py.import(module).map_err(|err| {
        // A ModuleNotFoundError for the module itself (or a parent package) is
        // "not found"; anything else happened while its code ran.
        let not_found_name = err
            .value(py)
            .getattr("name")
            .ok()
            .and_then(|n| n.extract::<String>().ok());
        let is_ours = err.is_instance_of::<pyo3::exceptions::PyModuleNotFoundError>(py)
            && not_found_name
                .as_deref()
                .is_some_and(|n| module == n || module.starts_with(&format!("{n}.")));
        if is_ours {
            let dir = std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default();
            StartError::with_python(
                format!(
                    "cannot find the module '{module}' (looked in {dir} and sys.path; use --chdir or --pythonpath to add its directory)"
                ),
                py,
                &err,
            )
        } else {
            StartError::with_python(format!("importing '{module}' failed"), py, &err)
        }
    })
}

fn import_file<'py>(py: Python<'py>, path: &Path) -> Result<Bound<'py, PyModule>, StartError> {
    if !path.is_file() {
        return Err(StartError::new(format!(
            "the WSGI file {} does not exist",
            path.display()
        )));
    }
    let code = std::fs::read_to_string(path)
        .map_err(|e| StartError::new(format!("cannot read {}: {e}", path.display())))?;
    let code = CString::new(code)
        .map_err(|_| StartError::new(format!("{} contains a NUL byte", path.display())))?;
    let file_name = CString::new(path.to_string_lossy().as_bytes())
        .map_err(|_| StartError::new("the file name contains a NUL byte"))?;
    // uWSGI loads a --wsgi-file as a module named after the file; so do we,
    // so the app's tracebacks name the real file.
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().replace(['.', '-'], "_"))
        .unwrap_or_else(|| "wsgi_file".into());
    let module_name = CString::new(stem).unwrap_or_else(|_| c"wsgi_file".into());
    PyModule::from_code(py, &code, &file_name, &module_name).map_err(|err| {
        StartError::with_python(format!("running {} failed", path.display()), py, &err)
    })
}

fn find_callable<'py>(
    py: Python<'py>,
    module: &Bound<'py, PyModule>,
    name: &str,
    what: &str,
) -> Result<Bound<'py, PyAny>, StartError> {
    // `create_app()`: call an app factory with no arguments, as gunicorn allows.
    let (path, call) = match name.strip_suffix("()") {
        Some(n) => (n, true),
        None => (name, false),
    };
    let mut obj: Bound<'py, PyAny> = module.clone().into_any();
    for part in path.split('.') {
        obj = obj.getattr(part).map_err(|_| {
            StartError::app_not_found(format!(
                "{what}: no attribute '{part}' was found in the module"
            ))
        })?;
    }
    if call {
        obj = obj.call0().map_err(|e| {
            StartError::with_python(format!("calling the app factory {what} failed"), py, &e)
        })?;
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_specs_parse_like_gunicorns() {
        assert_eq!(
            AppSource::parse_spec("apps.lab:app").unwrap(),
            AppSource::Module {
                module: "apps.lab".into(),
                callable: Some("app".into())
            }
        );
        assert_eq!(
            AppSource::parse_spec("hello").unwrap(),
            AppSource::Module {
                module: "hello".into(),
                callable: None
            }
        );
        assert!(AppSource::parse_spec("proj:create_app()").is_ok());
        for bad in ["", ":app", "apps/lab.py", "apps.lab:", "a b:c", "apps..lab"] {
            assert!(
                AppSource::parse_spec(bad).is_err(),
                "{bad} should be refused"
            );
        }
    }
}
