//! The exit statuses of `nixos-test-driver`, in one place.

/// The test passed.
pub const SUCCESS: i32 = 0;
/// The test failed: an assertion, a machine error, an exception. (The global timeout and
/// signals: `Stop::exit_status`.)
pub const TEST_FAILED: i32 = 1;
/// The command line or the configuration is wrong; nothing was started.
pub const USAGE: i32 = 2;
/// Interrupted by Ctrl-C (128 + SIGINT, as a shell reports it).
pub const INTERRUPTED: i32 = 130;
