//! `stage3-prefork`: a master that forks, watches and replaces workers.
//!
//! ```text
//! cargo run -p stage3-prefork                         # hello app, 2 x cores + 1 workers
//! cargo run -p stage3-prefork -- apps.lab:app -w 4    # the lab app, 4 workers
//! cargo run -p stage3-prefork -- -c gunicorn.conf.py  # settings and hooks from a file
//! kill -TTIN <master pid>                             # one more worker
//! ```

use stage3_prefork::config_file::CommandLine;
use stage3_prefork::{Listeners, Master};
use wsgi_bridge::boot;
use wsgi_bridge::embed::StartError;

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(sentence) = stage3_prefork::unsupported::refusal(&argv) {
        eprintln!("error: {sentence}");
        std::process::exit(2);
    }
    let command_line = match CommandLine::read(std::env::args_os().collect()) {
        Ok(command_line) => command_line,
        Err(e) => boot::exit_with(e),
    };
    match run(command_line) {
        Ok(status) => std::process::exit(status),
        Err(e) => boot::exit_with(e),
    }
}

fn run(command_line: CommandLine) -> Result<i32, StartError> {
    command_line.args.log.install()?;
    if let Some(path) = &command_line.args.trace {
        // Opened before the first fork: every worker appends to it too.
        wsgi_bridge::trace::open(path).map_err(|e| {
            StartError::new(format!("cannot write the trace {}: {e}", path.display()))
        })?;
    }
    for warning in &command_line.warnings {
        log::warn!("{warning}");
    }
    if command_line.args.print_config {
        // Printed before the settings are checked, as gunicorn does: what
        // was read is worth seeing most when it is wrong.
        print!("{}", command_line.print_config());
    }
    let check = command_line.args.check_config || command_line.args.print_config;
    let CommandLine {
        args, hooks, file, ..
    } = command_line;
    let mut setup = args.setup()?;
    if check {
        // gunicorn's --check-config: the settings were read, now import the
        // app as a worker would; any failure is the exit status.
        setup
            .worker_class
            .load_app(&setup.config.app, &setup.config.source)?;
        return Ok(0);
    }
    setup.config.hooks = hooks;
    if file.is_some() {
        setup.config.reread = Some(rereader(&setup));
    }
    let master = Master {
        config: setup.config,
        worker_class: setup.worker_class,
        extra_children: Vec::new(),
    };
    master.run(|| Listeners::open(setup.bind, setup.reuse_port))
}

// ANCHOR: rereader
/// How a HUP reads the settings again: the same command line, read as at
/// the start (the file, GUNICORN_CMD_ARGS, the flags), from the directory
/// the server was started in (the master has moved to --chdir since). What
/// a reload cannot change is named, to be said in the log.
fn rereader(first: &stage3_prefork::config::Setup) -> stage3_prefork::config::Rereader {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let start_dir = std::env::current_dir().ok();
    let (bind, class, preload) = (
        first.bind.clone(),
        first.worker_class.name(),
        first.config.preload,
    );
    Box::new(move || {
        let here = std::env::current_dir().ok();
        if let Some(dir) = &start_dir {
            let _ = std::env::set_current_dir(dir);
        }
        let read = CommandLine::read(argv.clone()).and_then(|command_line| {
            let hooks = command_line.hooks;
            command_line.args.setup().map(|setup| (setup, hooks))
        });
        if let Some(dir) = &here {
            let _ = std::env::set_current_dir(dir);
        }
        let (setup, hooks) = read?;
        let mut not_applied = Vec::new();
        if setup.bind != bind {
            not_applied.push(
                "bind changed: the listening sockets stay as they are (restart, or USR2, to listen elsewhere)".to_string(),
            );
        }
        if setup.worker_class.name() != class {
            not_applied.push(format!(
                "worker_class changed: the workers stay {class} (restart to change it)"
            ));
        }
        if setup.config.preload != preload {
            not_applied.push("preload_app changed: it takes a restart".to_string());
        }
        let mut config = setup.config;
        config.hooks = hooks;
        Ok(stage3_prefork::config::Reread {
            config,
            worker_class: setup.worker_class,
            not_applied,
        })
    })
}
// ANCHOR_END: rereader
