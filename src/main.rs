//! `slimscope` with no arguments (or just a model path) opens the app; otherwise it
//! runs a CLI subcommand. Errors print one clear line on stderr and exit with code 2.

use clap::Parser;
use slimscope::cli::Cli;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(command) => slimscope::cli::run(command),
        None => open_app(cli.model),
    };
    if let Err(e) = result {
        // A reader that went away (`slimscope inspect … | head`) is not an error.
        let broken_pipe = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if broken_pipe {
            return;
        }
        // One line, whatever the file names inside it hold.
        eprintln!("error: {}", slimscope::text::printable(&format!("{e:#}")));
        std::process::exit(2);
    }
}

#[cfg(feature = "gui")]
fn open_app(model: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    slimscope::app::run(model)
}

#[cfg(not(feature = "gui"))]
fn open_app(_model: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    anyhow::bail!(
        "this build has no app (built without the `gui` feature); try `slimscope inspect MODEL`"
    )
}
