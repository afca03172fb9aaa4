//! The `gatehouse` binary: all behaviour lives in the library.

fn main() -> std::process::ExitCode {
    gatehouse::cli::main()
}
