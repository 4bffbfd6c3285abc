/// The engine allocates many small, short-lived values (JSON trees, rows, events) on every
/// thread; mimalloc serves that pattern markedly faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    chatledger_api::cli::main()
}
