//! The small static site stage 5 serves at `/static/` when `--static` is not
//! given. It is built into the binary, so `cargo run -p stage5-nginx` works
//! from any directory (and an installed binary too): at start-up the files
//! are written into the run directory, and nginx serves them from there.

use std::io;
use std::path::Path;

/// The files of `stage5-nginx/static/`, as they were at build time.
const FILES: &[(&str, &[u8])] = &[
    ("index.html", include_bytes!("../static/index.html")),
    ("style.css", include_bytes!("../static/style.css")),
    ("logo.svg", include_bytes!("../static/logo.svg")),
];

/// Writes the site into `dir` (created if needed).
pub fn write_into(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in FILES {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}
