//! `vpn-setup`: boot-time set-up of the appliance host.
//!
//! `vpn-setup hugepages [--conf FILE]` reserves the hugepages that
//! `hugepages.conf` asks for and mounts hugetlbfs, idempotently. It exits
//! 0 when hugepages are usable, 3 when they are not (the daemon then runs
//! with `--no-huge` and logs why), 1 for a bad configuration file.

use std::path::PathBuf;

use appliance::hugepages::{self, HugepageConfig};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(version, about = "Boot-time set-up of the VPN appliance host")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Reserve hugepages and mount hugetlbfs as hugepages.conf says.
    Hugepages {
        /// The hugepage configuration file.
        #[arg(long, default_value = "/etc/vpn/hugepages.conf")]
        conf: PathBuf,
        /// Only print the current state.
        #[arg(long)]
        status: bool,
    },
}

fn main() {
    let Args { command } = Args::parse();
    let Command::Hugepages { conf, status } = command;
    let config = match HugepageConfig::load(&conf) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vpn-setup: {e}");
            std::process::exit(1);
        }
    };
    let result = if status {
        Ok(hugepages::status(&config))
    } else {
        hugepages::apply(&config)
    };
    match result {
        Ok(s) => {
            println!(
                "hugepages: {} x {} KiB reserved, {} free ({} MiB), hugetlbfs {} at {}",
                s.total,
                s.page_kib,
                s.free,
                s.free_mib(),
                if s.mounted { "mounted" } else { "NOT mounted" },
                config.mount.display()
            );
            if !(s.mounted && s.total > 0) {
                std::process::exit(3);
            }
        }
        Err(e) => {
            eprintln!("vpn-setup: {e}; the appliance will run with --no-huge");
            std::process::exit(3);
        }
    }
}
