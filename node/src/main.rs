//! The `causeway` binary.

/// The daemon allocates and frees small buffers on every write, often on another thread than the
/// one that allocated them (a client's command is freed by the storage writer); mimalloc does
/// that at a fraction of the system allocator's cost.
#[global_allocator]
static ALLOCATOR: causeway::allocator::MiMalloc = causeway::allocator::MiMalloc;

fn main() -> std::process::ExitCode {
    causeway::allocator::configure();
    causeway::cli::main()
}
