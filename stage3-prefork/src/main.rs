//! `stage3-prefork`: a master that forks, watches and replaces workers.
//!
//! ```text
//! cargo run -p stage3-prefork                         # hello app, 2 x cores + 1 workers
//! cargo run -p stage3-prefork -- apps.lab:app -w 4    # the lab app, 4 workers
//! kill -TTIN <master pid>                             # one more worker
//! ```

use clap::Parser;
use stage3_prefork::{Args, Listeners, Master};
use wsgi_bridge::boot;
use wsgi_bridge::embed::StartError;

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(sentence) = stage3_prefork::unsupported::refusal(&argv) {
        eprintln!("error: {sentence}");
        std::process::exit(2);
    }
    let args = Args::parse();
    match run(args) {
        Ok(status) => std::process::exit(status),
        Err(e) => boot::exit_with(e),
    }
}

fn run(args: Args) -> Result<i32, StartError> {
    args.log.install()?;
    if let Some(path) = &args.trace {
        // Opened before the first fork: every worker appends to it too.
        wsgi_bridge::trace::open(path).map_err(|e| {
            StartError::new(format!("cannot write the trace {}: {e}", path.display()))
        })?;
    }
    let setup = args.setup()?;
    let master = Master {
        config: setup.config,
        worker_class: setup.worker_class,
        extra_children: Vec::new(),
    };
    master.run(|| Listeners::open(setup.bind, setup.reuse_port))
}
