//! The appliance binary: serve the core, talk to it (`ctl`), inspect the journal, and run as
//! PID 1 in its image.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;

fn main() {
    if std::process::id() == 1 {
        appliance::pid1::main();
    }
    std::process::exit(cli::run());
}
