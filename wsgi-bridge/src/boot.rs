//! Start-up steps every stage takes in the same order: load the app (so an
//! import error stops the server before it listens), bind, print the banner.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::unix::net::UnixStream;

use pyo3::prelude::*;

use crate::cli::AppArgs;
use crate::embed::{self, AppSource, StartError};

/// Starts Python and imports the app the arguments name.
pub fn load_app(args: &AppArgs) -> Result<Py<PyAny>, StartError> {
    load_app_from(args, &args.source()?)
}

/// Starts Python as `args` say (sys.path, virtualenv) and imports the app
/// from `source`: what every stage does before it serves, in its one
/// process, in each worker, or once in a master that preloads.
pub fn load_app_from(args: &AppArgs, source: &AppSource) -> Result<Py<PyAny>, StartError> {
    embed::start_python(&args.python_setup())?;
    Python::attach(|py| embed::load_app(py, source))
}

/// Which Python is embedded, and the virtualenv the app's packages come
/// from, for the banner: students should see at once whether it is the
/// Python (and the virtualenv) they meant.
pub fn python_banner(app: &AppArgs) -> String {
    match &app.virtualenv {
        Some(venv) => format!("{}, virtualenv {}", python_description(), venv.display()),
        None => python_description(),
    }
}

/// Which Python is embedded: `Python 3.11.7 (/usr)`, its version and its
/// prefix. Works before Python starts too (stage 3's master without
/// `--preload` never starts it): the version is then the library's own, and
/// the prefix is where the loaded `libpython` lives.
pub fn python_description() -> String {
    // SAFETY: Py_IsInitialized may be called at any time.
    if unsafe { pyo3::ffi::Py_IsInitialized() } == 0 {
        return python_description_before_start();
    }
    Python::attach(|py| {
        let sys = py.import("sys").ok();
        let get = |name: &str| {
            sys.as_ref()
                .and_then(|s| s.getattr(name).ok())
                .and_then(|v| v.extract::<String>().ok())
                .unwrap_or_default()
        };
        let version = py.version_info();
        format!(
            "Python {}.{}.{} ({})",
            version.major,
            version.minor,
            version.patch,
            get("prefix")
        )
    })
}

fn python_description_before_start() -> String {
    // SAFETY: Py_GetVersion is one of the few functions the C API allows
    // before Py_Initialize; it returns a static string.
    let version = unsafe { std::ffi::CStr::from_ptr(pyo3::ffi::Py_GetVersion()) };
    let version = version.to_string_lossy();
    let version = version.split_whitespace().next().unwrap_or("?");
    match libpython_prefix() {
        Some(prefix) => format!("Python {version} ({})", prefix.display()),
        None => format!("Python {version}"),
    }
}

/// The installation prefix of the `libpython` this process loaded: the
/// parent of the `lib` directory it is in (`/usr/lib/x86_64-linux-gnu/…`
/// gives `/usr`, `~/.pyenv/versions/3.11.7/lib/…` gives the version's
/// directory).
fn libpython_prefix() -> Option<std::path::PathBuf> {
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let symbol = pyo3::ffi::Py_GetVersion as *const libc::c_void;
    // SAFETY: dladdr only reads the loader's tables and fills `info`.
    if unsafe { libc::dladdr(symbol, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname points to a NUL-terminated path owned by the loader.
    let file = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    let file = std::path::PathBuf::from(file.to_string_lossy().into_owned());
    let lib = file
        .ancestors()
        .find(|dir| dir.file_name().is_some_and(|n| n == "lib"))?;
    lib.parent().map(std::path::Path::to_path_buf)
}

/// Installs the stop signals (SIGINT, SIGTERM) of a server that runs its
/// loop itself: see [`supervise::signals::stop_on_signals`]. The returned
/// socket becomes readable when one arrives.
pub fn stop_on_signals() -> Result<UnixStream, StartError> {
    supervise::signals::stop_on_signals()
        .map_err(|e| StartError::new(format!("cannot install the signal handlers: {e}")))
}

pub use supervise::signals::stop_requested;

/// Prints a start-up error (the Python traceback first, the one sentence
/// last, where the eye lands) and exits with status 1.
pub fn exit_with(err: StartError) -> ! {
    if let Some(tb) = &err.traceback {
        eprintln!("{}", tb.trim_end());
    }
    eprintln!("error: {}", err.message);
    std::process::exit(1)
}

/// Parses the address forms gunicorn and uWSGI users type, for TCP:
/// `HOST:PORT`, `[::1]:PORT`, `HOST` alone (port 8000), `:PORT` (every
/// interface, as gunicorn's `-b :8000` and uWSGI's `--http :5000` mean) and
/// `PORT` alone (on 127.0.0.1: gunicorn would read `8000` as a host name,
/// the IPv4 address 0.0.31.64, which nobody means).
pub fn resolve_bind(bind: &str) -> Result<SocketAddr, StartError> {
    let bind = bind.trim();
    if bind.starts_with("unix:") {
        return Err(StartError::new(format!(
            "this server listens on TCP only, so --bind {bind} cannot be used: give HOST:PORT (stages 3 and 4 listen on unix sockets)"
        )));
    }
    let is_port = |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(port) = bind.strip_prefix(':').filter(|p| is_port(p)) {
        return resolve_bind(&format!("0.0.0.0:{port}"));
    }
    if is_port(bind) {
        return resolve_bind(&format!("127.0.0.1:{bind}"));
    }
    let with_port = if bind.rsplit_once(':').is_some_and(|(h, p)| {
        !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && (!h.contains(':') || h.ends_with(']'))
    }) {
        bind.to_string()
    } else {
        format!("{bind}:8000")
    };
    with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            StartError::new(format!(
                "'{bind}' is not an address to listen on: give HOST:PORT, e.g. 127.0.0.1:8000"
            ))
        })
}

/// Binds a TCP listener, turning the usual failures into one clear sentence
/// (which names gunicorn's `-b`).
pub fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, StartError> {
    bind_tcp_as(addr, "-b")
}

/// [`bind_tcp`] for an address given with another flag (`--socket`,
/// `--http`): the hint for a busy port names that flag.
pub fn bind_tcp_as(addr: SocketAddr, flag: &str) -> Result<TcpListener, StartError> {
    let listener = TcpListener::bind(addr).map_err(|e| bind_error_as(addr, e, flag))?;
    defer_accept(&listener);
    Ok(listener)
}

// ANCHOR: defer_accept
/// Asks Linux to complete `accept` only once the client's first bytes have
/// arrived (nginx's `listen … deferred`). An HTTP client always speaks first,
/// so the server never accepts a connection only to block at once in
/// `read`: one sleep and wake-up fewer per connection.
pub fn defer_accept(listener: &TcpListener) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let seconds: libc::c_int = 1;
        // SAFETY: a valid socket fd and a pointer to a c_int of the right size.
        let rc = unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&seconds as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            log::debug!(
                "TCP_DEFER_ACCEPT not set: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = listener;
}
// ANCHOR_END: defer_accept

pub fn bind_error(addr: SocketAddr, e: std::io::Error) -> StartError {
    bind_error_as(addr, e, "-b")
}

/// Why `addr`, given with `flag`, cannot be listened on, in one sentence.
pub fn bind_error_as(addr: SocketAddr, e: std::io::Error, flag: &str) -> StartError {
    {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => format!(
                "the address is already in use (is another server running there? choose another port with {flag} {}:{})",
                addr.ip(),
                addr.port().wrapping_add(1).max(1)
            ),
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (ports below 1024 need root; use a port such as 8000)"
                    .to_string()
            }
            std::io::ErrorKind::AddrNotAvailable => {
                "no network interface on this machine has that address".to_string()
            }
            _ => e.to_string(),
        };
        StartError::new(format!("cannot listen on {addr}: {hint}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_forms() {
        assert_eq!(resolve_bind("127.0.0.1:9000").unwrap().port(), 9000);
        assert_eq!(resolve_bind("127.0.0.1").unwrap().port(), 8000);
        assert_eq!(resolve_bind("[::1]:9000").unwrap().port(), 9000);
        assert!(resolve_bind("unix:/tmp/x.sock").is_err());
        assert_eq!(
            resolve_bind(":9000").unwrap(),
            "0.0.0.0:9000".parse().unwrap()
        );
        assert_eq!(
            resolve_bind("9000").unwrap(),
            "127.0.0.1:9000".parse().unwrap()
        );
        assert!(resolve_bind("127.0.0.1:notaport").is_err());
    }
}
