//! `reduce`: compressed volumes on backing files, from the shell. `reduce --help` and
//! the README's "The reduce command" say what each command does; one module per command,
//! `volume` for opening a volume and saying why it cannot be, `fail` for messages and
//! exit codes.

/// println!, without its panic when stdout is gone (`reduce info | head -1`): the
/// reader has what it wanted.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod args;
mod check;
mod codec;
mod copy;
mod create;
mod destroy;
mod fail;
mod info;
mod progress;
mod size;
mod volume;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (name, result) = match &cli.command {
        Command::Create(args) => ("create", create::run(args)),
        Command::Info(args) => ("info", info::run(args)),
        Command::Check(args) => ("check", check::run(args)),
        Command::Import(args) => ("import", copy::import(args)),
        Command::Export(args) => ("export", copy::export(args)),
        Command::Destroy(args) => ("destroy", destroy::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // Not eprintln!, which panics when stderr is closed.
            let _ = writeln!(std::io::stderr(), "reduce {name}: {failure}");
            failure.code()
        }
    }
}
