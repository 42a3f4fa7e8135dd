//! `--reload`: a worker that exits when a source file of the app changes,
//! so that the master starts a new one, which imports the new code. For
//! development: edit, save, reload the page.
//!
//! Each worker watches the files of the modules it imported (everything in
//! `sys.modules` that has a file) with Linux's inotify, from a thread of
//! its own, and stops gracefully (SIGTERM to itself) at the first change.
//! gunicorn's reloader works the same way, in each worker. An editor that
//! saves by writing a new file and renaming it over the old one is seen
//! too: the watched file is then moved or deleted.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use pyo3::prelude::*;

/// Starts watching the app's source files; returns how many are watched.
pub(crate) fn watch_sources() -> std::io::Result<usize> {
    let files = Python::attach(module_files);
    // SAFETY: inotify_init1 has no preconditions.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mask = libc::IN_MODIFY
        | libc::IN_CLOSE_WRITE
        | libc::IN_ATTRIB
        | libc::IN_MOVE_SELF
        | libc::IN_DELETE_SELF;
    let mut watched = Vec::new();
    for file in files {
        let Ok(path) = CString::new(file.as_os_str().as_bytes()) else {
            continue;
        };
        // SAFETY: a valid inotify fd and a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd, path.as_ptr(), mask) };
        if wd >= 0 {
            watched.push((wd, file));
        }
    }
    let count = watched.len();
    std::thread::Builder::new()
        .name("reloader".into())
        .spawn(move || wait_for_a_change(fd, &watched))?;
    Ok(count)
}

/// The files of every imported module that has one (`.py`, extensions).
fn module_files(py: Python<'_>) -> Vec<PathBuf> {
    let Ok(modules) = py.import("sys").and_then(|sys| sys.getattr("modules")) else {
        return Vec::new();
    };
    let Ok(values) = modules.call_method0("values").and_then(|v| v.try_iter()) else {
        return Vec::new();
    };
    values
        .flatten()
        .filter_map(|module| module.getattr("__file__").ok()?.extract::<String>().ok())
        .map(PathBuf::from)
        .collect()
}

fn wait_for_a_change(fd: i32, watched: &[(i32, PathBuf)]) {
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: read(2) into a buffer we own, from our inotify fd.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        // The first event's watch descriptor names the file.
        let wd = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let file = watched.iter().find(|(w, _)| *w == wd).map_or_else(
            || "a source file".to_string(),
            |(_, f)| f.display().to_string(),
        );
        log::info!("Worker reloading: {file} modified");
        // A graceful stop, as on the master's TERM: the master starts a new
        // worker, which imports the code again.
        // SAFETY: kill(2) on this very process.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        return;
    }
}
