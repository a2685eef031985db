//! `image build`: builds the kernel, initramfs and data disk of the appliance image.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Builds the appliance's bootable image (kernel + initramfs)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the kernel and initramfs (and a blank data disk if asked).
    Build {
        /// Output directory (default: <workspace>/target/image).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Use this prebuilt static appliance binary instead of building it.
        #[arg(long)]
        appliance: Option<PathBuf>,
        /// Also create a blank data disk here if it does not exist.
        #[arg(long)]
        data_disk: Option<PathBuf>,
        /// Never download: fail if the kernel package is not cached.
        #[arg(long)]
        offline: bool,
    },
    /// Only make sure the pinned kernel package is downloaded and verified in the cache.
    FetchKernel,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let mut options = image::BuildOptions::default();
    match cli.command {
        Cmd::FetchKernel => {
            let deb = image::kernel::ensure_deb(&options.kernel, &options.cache_dir, true)?;
            println!("kernel package ready: {}", deb.display());
        }
        Cmd::Build {
            out,
            appliance,
            data_disk,
            offline,
        } => {
            if let Some(out) = out {
                options.out_dir = out;
            }
            options.appliance_binary = appliance;
            options.allow_fetch = !offline;
            let artifacts = image::build(&options).context("build the image")?;
            println!("kernel={}", artifacts.kernel.display());
            println!("initramfs={}", artifacts.initramfs.display());
            println!("kernel_version={}", artifacts.kernel_version);
            println!("cmdline={}", artifacts.cmdline);
            println!("modules={}", artifacts.modules.join(","));
            if let Some(disk) = data_disk {
                image::create_blank_data_disk(&disk, image::DATA_DISK_BYTES_DEFAULT)?;
                println!("data_disk={}", disk.display());
            }
        }
    }
    Ok(())
}
