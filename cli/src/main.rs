//! `reduce`: compressed volumes on backing files, from the shell. `reduce --help` and
//! the README's "Using reduce" say what each command does; one module per command,
//! `volume` for opening a volume and saying why it cannot be, `fail` for messages and
//! exit codes.

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
            eprintln!("reduce {name}: {failure}");
            failure.code()
        }
    }
}
