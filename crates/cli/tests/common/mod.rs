//! What the command line's two test tiers share: the end-to-end tests on real VMs
//! (`tests/e2e/`) and the quick tier on fake machines (`tests/quick/`) run the same binary the
//! same way, so they share the scenario directory and the driver runs in it ([`scenario`]), a
//! driver watched while it runs ([`live`]), the OTLP receiver ([`otlp`]) and the terminal of the
//! REPL tests ([`tmux`]).
//!
//! Each tier includes this module with `#[path]` and uses part of it.

pub mod live;
pub mod otlp;
pub mod scenario;
pub mod tmux;
