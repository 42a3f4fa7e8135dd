//! What of stage 5 others use: the nginx configuration it writes
//! ([`config`]) and how it finds nginx ([`programs`]). The test harness
//! starts its nginx in front of stage 4 with the same two, so there is one
//! nginx configuration in the workspace. The supervisor itself is the
//! binary (`main.rs`).
//!
//! Nothing here embeds Python or depends on the bridge: errors are the
//! sentence to print, and the binary wraps them in its start-up error.

pub mod config;
pub mod programs;
