//! The `idbridge` binary: parses the command line and hands over to the library.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// mimalloc, not glibc's malloc: bulk syncs allocate and free millions of small strings, and
/// glibc's malloc/free/consolidate took about a third of a full LDAP sync's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = idbridge::cli::Cli::parse();
    match idbridge::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
