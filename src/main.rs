//! The `kubelab` binary: parse, run, and turn the result into an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    kubelab::cli::main()
}
