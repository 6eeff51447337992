//! `vpn-setup`: boot-time set-up of the appliance host.
//!
//! `vpn-setup hugepages [--conf FILE]` reserves the hugepages that
//! `hugepages.conf` asks for and mounts hugetlbfs, idempotently. It exits
//! 0 when hugepages are usable, 3 when they are not (the daemon then runs
//! with `--no-huge` and logs why), 1 for a bad configuration file.
//!
//! `vpn-setup nics [--config FILE]` binds the PCI devices of the
//! configuration's ports to `vfio-pci` for DPDK (`appliance::nics`),
//! remembering their drivers in `--state`; `--restore` gives them back;
//! `--status` only prints. Exit 0 when every configured PCI device is on
//! vfio-pci (or there is none), 1 for a configuration that cannot be
//! read, 4 when a device could not be bound or restored (the message
//! says which and why).

use std::path::{Path, PathBuf};

use appliance::hugepages::{self, HugepageConfig};
use appliance::nics::{self, BindOptions, Host, NicState, Outcome, SysHost};
use clap::{Parser, Subcommand};
use control::config::{ConfigStore, Journal};

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
    /// Bind the configured PCI NICs to vfio-pci (or give them back).
    Nics {
        /// vpnd's configuration file (its store next to it is read first,
        /// as vpnd does).
        #[arg(long, short = 'c', default_value = "/etc/vpn/vpnd.toml")]
        config: PathBuf,
        /// Where the original drivers are remembered.
        #[arg(long, default_value = nics::DEFAULT_STATE)]
        state: PathBuf,
        /// Give the devices bound earlier back to their kernel drivers.
        #[arg(long, conflicts_with_all = ["status", "force"])]
        restore: bool,
        /// Only print each configured device and its driver.
        #[arg(long)]
        status: bool,
        /// Bind a device even when its kernel interface is up with addresses.
        #[arg(long)]
        force: bool,
    },
}

fn main() {
    let Args { command } = Args::parse();
    match command {
        Command::Hugepages { conf, status } => hugepages_command(&conf, status),
        Command::Nics {
            config,
            state,
            restore,
            status,
            force,
        } => nics_command(&config, &state, restore, status, force),
    }
}

fn hugepages_command(conf: &Path, status: bool) {
    let config = match HugepageConfig::load(conf) {
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

fn nics_command(config: &Path, state_path: &Path, restore: bool, status: bool, force: bool) {
    let fail = |code: i32, e: &dyn std::fmt::Display| -> ! {
        eprintln!("vpn-setup: {e}");
        std::process::exit(code);
    };
    let mut host = SysHost::default();
    let mut state = NicState::load(state_path).unwrap_or_else(|e| fail(1, &e));
    if restore {
        let result = nics::restore_all(&mut host, &mut state);
        state.save(state_path).unwrap_or_else(|e| fail(4, &e));
        match result {
            Ok(done) => {
                for (dev, outcome) in done {
                    if let Outcome::Restored { to } = outcome {
                        println!("{dev}: back on {}", to.as_deref().unwrap_or("no driver"));
                    }
                }
            }
            Err(e) => fail(4, &e),
        }
        return;
    }
    let cfg = Journal::startup_config(&ConfigStore::new(config))
        .unwrap_or_else(|e| fail(1, &format!("{}: {e}", config.display())));
    let devices = nics::configured_devices(&cfg);
    if devices.is_empty() {
        println!(
            "no PCI devices among the configured ports (virtual devices only): nothing to bind"
        );
        return;
    }
    if status {
        for (port, dev) in &devices {
            let driver = if host.device_exists(dev) {
                host.driver(dev).unwrap_or_else(|| "no driver".to_owned())
            } else {
                "ABSENT".to_owned()
            };
            println!("{port}: {dev} on {driver}");
        }
        return;
    }
    let options = BindOptions {
        force,
        allow_no_iommu: cfg.dataplane.allow_no_iommu,
    };
    let result = nics::bind_all(&mut host, &devices, options, &mut state);
    // Whatever was bound before an error is recorded, for --restore.
    state.save(state_path).unwrap_or_else(|e| fail(4, &e));
    match result {
        Ok(done) => {
            for (dev, outcome) in done {
                match outcome {
                    Outcome::AlreadyBound => println!("{dev}: on {} already", nics::VFIO_PCI),
                    Outcome::Bound { from } => println!(
                        "{dev}: bound to {} (was {})",
                        nics::VFIO_PCI,
                        from.as_deref().unwrap_or("no driver")
                    ),
                    Outcome::Restored { .. } => {}
                }
            }
        }
        Err(e) => fail(4, &e),
    }
}
