//! `stage3-prefork`: a master that forks, watches and replaces workers.
//!
//! ```text
//! cargo run -p stage3-prefork                         # hello app, 2 x cores + 1 workers
//! cargo run -p stage3-prefork -- apps.lab:app -w 4    # the lab app, 4 workers
//! kill -TTIN <master pid>                             # one more worker
//! ```

use clap::Parser;
use stage3_prefork::config::{Args, Config};
use stage3_prefork::listen::Listeners;
use stage3_prefork::master;
use wsgi_bridge::boot;
use wsgi_bridge::embed::StartError;

fn main() {
    let args = Args::parse();
    match run(args) {
        Ok(status) => std::process::exit(status),
        Err(e) => boot::exit_with(e),
    }
}

fn run(args: Args) -> Result<i32, StartError> {
    args.log.install()?;
    let config = Config::from_args(args)?;
    master::run(config, |config| {
        let addr = config.bind.expect("stage 3 listens on TCP");
        Listeners::bind(addr, config.reuse_port)
    })
}
