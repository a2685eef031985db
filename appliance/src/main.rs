//! The appliance binary: serve the core, talk to it (`ctl`), inspect the journal, and run as
//! PID 1 in its image.

/// mimalloc instead of glibc's malloc: State is many small allocations, replay frees on one
/// thread what another allocated, and under TCG every page fault is dear (100k-tenant replay
/// in the guest: 1,214-1,536 ms with glibc, 886-984 with mimalloc; see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;
mod remote;

fn main() {
    if std::process::id() == 1 {
        appliance::pid1::main();
    }
    std::process::exit(cli::run());
}
