// The bridge benchmark (benches/bridge.rs) embeds Python: link it with an
// rpath to the libpython pyo3 was built against, as every stage's build
// script does, or the loader may pick another Python's library.
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
