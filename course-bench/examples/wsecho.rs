// temporary: drive the WebSocket echo for profiling. usage: wsecho ADDR SECS [CLIENTS] [THREADS]
use course_bench::measurement::Budget;
use std::time::Duration;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let addr: std::net::SocketAddr = a[1].parse().unwrap();
    let secs: u64 = a[2].parse().unwrap();
    let clients: usize = a.get(3).map(|c| c.parse().unwrap()).unwrap_or(32);
    let threads: usize = a.get(4).map(|c| c.parse().unwrap()).unwrap_or(1);
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                course_bench::websocket::echo(
                    addr,
                    "/ws",
                    clients / threads,
                    16,
                    Budget::Time(Duration::from_secs(secs)),
                    1,
                )
            })
        })
        .collect();
    let (mut n, mut cpu, mut err) = (0u64, 0f64, 0u64);
    for h in hs {
        let r = h.join().unwrap();
        n += r.report.requests;
        cpu += r.clients_cpu.as_secs_f64();
        err += r.report.errors;
    }
    let s = secs as f64;
    println!(
        "{:.0} msg/s, client cpu {:.2} cores ({:.1} us/msg), errors {}",
        n as f64 / s,
        cpu / s,
        cpu * 1e6 / n as f64,
        err
    );
}
