//! The `odgm-sim` command line.

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Stop quietly when whoever reads the output goes away (`odgm-sim run ... | head`), as
    // other command-line tools do, instead of panicking on the broken pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default action of one signal, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    odgm_sim::cmd::run(odgm_sim::cmd::Cli::parse())
}
