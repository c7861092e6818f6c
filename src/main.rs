//! The `deskhook` binary: parses the command line and hands over to [`deskhook::cli`].
//! No logic lives here.

use std::process::ExitCode;

fn main() -> ExitCode {
    deskhook::cli::main()
}
