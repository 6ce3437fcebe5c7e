//! `jasper`: the command line client of `jasperd` (see `jasper --help`).

fn main() -> std::process::ExitCode {
    jasper_cli::main()
}
