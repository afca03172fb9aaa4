//! The `gatehouse` binary: all behaviour lives in the library.

/// mimalloc instead of glibc's allocator: a guarded request makes many small allocations, and
/// mimalloc returns freed memory (argon2's 19 MiB per login) to the OS.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    gatehouse::cli::main()
}
