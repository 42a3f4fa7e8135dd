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
    let CommandLine { args, hooks, .. } = command_line;
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
    let master = Master {
        config: setup.config,
        worker_class: setup.worker_class,
        extra_children: Vec::new(),
    };
    master.run(|| Listeners::open(setup.bind, setup.reuse_port))
}
