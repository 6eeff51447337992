//! EAL command lines for the appliance's processes.

use crate::hugepages::{self, HugepageConfig};

/// Memory the EAL asks for without hugepages (`-m`, MiB).
pub const NO_HUGE_MEMORY_MIB: u32 = 512;

/// How the EAL gets its memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Memory {
    /// From hugepages mounted at this directory.
    Hugepages {
        /// hugetlbfs mount point (`--huge-dir`).
        dir: std::path::PathBuf,
        /// MiB to take (`-m`).
        mib: u32,
    },
    /// From ordinary pages (`--no-huge`): slower, for tests and small boxes.
    NoHuge {
        /// Why hugepages are not used, for the log.
        reason: String,
    },
}

/// Decides between hugepages and `--no-huge`: hugepages when hugetlbfs is
/// mounted and at least `want_mib` are free.
#[must_use]
pub fn choose_memory(config: Option<&HugepageConfig>, want_mib: u32) -> Memory {
    let Some(config) = config else {
        return Memory::NoHuge {
            reason: "no hugepages.conf".into(),
        };
    };
    let status = hugepages::status(config);
    if !status.mounted {
        return Memory::NoHuge {
            reason: format!("hugetlbfs is not mounted at {}", config.mount.display()),
        };
    }
    if status.free_mib() < u64::from(want_mib) {
        return Memory::NoHuge {
            reason: format!(
                "only {} MiB of hugepages free, {want_mib} MiB wanted",
                status.free_mib()
            ),
        };
    }
    Memory::Hugepages {
        dir: config.mount.clone(),
        mib: want_mib,
    }
}

/// Builds EAL arguments: always `--no-pci` unless PCI devices are named
/// (this build never probes the bus on its own), a file prefix, memory,
/// lcores and virtual devices.
#[must_use]
pub fn build(
    file_prefix: &str,
    lcores: &str,
    main_lcore: Option<u32>,
    memory: &Memory,
    vdevs: &[String],
) -> Vec<String> {
    let mut args = vec![
        "--no-pci".to_owned(),
        format!("--file-prefix={file_prefix}"),
        "-l".to_owned(),
        lcores.to_owned(),
        "--log-level=warning".to_owned(),
    ];
    if let Some(main) = main_lcore {
        args.push(format!("--main-lcore={main}"));
    }
    match memory {
        Memory::Hugepages { dir, mib } => {
            args.push(format!("--huge-dir={}", dir.display()));
            // Unlink the page files once mapped: a crashed process then
            // leaves no files behind holding hugepages.
            args.push("--huge-unlink".to_owned());
            args.push("-m".to_owned());
            args.push(mib.to_string());
        }
        Memory::NoHuge { .. } => {
            args.push("--no-huge".to_owned());
            args.push("-m".to_owned());
            args.push(NO_HUGE_MEMORY_MIB.to_string());
        }
    }
    args.extend(vdevs.iter().map(|v| format!("--vdev={v}")));
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_pci_and_prefix_always_present() {
        let args = build(
            "p1",
            "0-1",
            None,
            &Memory::NoHuge {
                reason: "test".into(),
            },
            &["net_null0".into()],
        );
        assert!(args.contains(&"--no-pci".to_owned()));
        assert!(args.contains(&"--file-prefix=p1".to_owned()));
        assert!(args.contains(&"--no-huge".to_owned()));
        assert!(args.contains(&"--vdev=net_null0".to_owned()));
    }

    #[test]
    fn missing_config_falls_back_to_no_huge() {
        assert!(matches!(choose_memory(None, 256), Memory::NoHuge { .. }));
        let conf = HugepageConfig {
            size: hugepages::PageSize::Size2M,
            count: 1,
            mount: "/nonexistent/hugepages".into(),
        };
        match choose_memory(Some(&conf), 256) {
            Memory::NoHuge { reason } => assert!(reason.contains("not mounted"), "{reason}"),
            m => panic!("expected the fallback, got {m:?}"),
        }
    }
}
