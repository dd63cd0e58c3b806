//! The `reduce` command, run as a user runs it: the built binary on real files, each
//! subcommand and each error, with its message and exit code.

mod check;
mod common;
mod copy;
mod create;
mod destroy;
mod info;
