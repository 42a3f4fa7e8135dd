//! `cluster status`: each host's link, stage 4 and workers, from its
//! `--stats` (fetched over the bridge, as a monitoring system would).

use super::hosts;
use super::{Host, net};

pub fn print(hosts: &[Host]) {
    println!(
        "{:<4} {:<17} {:<24} {:>7} {:>8} {:>9}  per worker",
        "host", "address", "link", "master", "workers", "requests"
    );
    let mut total = 0;
    for host in hosts {
        let link = match (net::link_up(*host), net::shaping(*host)) {
            (false, _) => "cut".to_string(),
            (true, Some(netem)) => netem,
            (true, None) => "up".to_string(),
        };
        let master = hosts::master(*host).map_or("-".to_string(), |p| p.to_string());
        match hosts::stats(*host) {
            Ok(stats) => {
                let (running, requests, _, _) = hosts::summary(&stats);
                total += requests;
                let per_worker: Vec<String> = stats["workers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|w| {
                        format!(
                            "{}:{}{}",
                            w["pid"],
                            w["requests"],
                            if w["status"] == "busy" { "*" } else { "" }
                        )
                    })
                    .collect();
                println!(
                    "{:<4} {:<17} {:<24} {:>7} {:>8} {:>9}  {}",
                    host.name(),
                    host.socket().to_string(),
                    link,
                    master,
                    running,
                    requests,
                    per_worker.join(" ")
                );
            }
            Err(e) => println!(
                "{:<4} {:<17} {:<24} {:>7} {:>8} {:>9}  stats: {e}",
                host.name(),
                host.socket().to_string(),
                link,
                master,
                "-",
                "-"
            ),
        }
    }
    println!("total requests: {total} (pid:requests per worker, * busy)");
}
