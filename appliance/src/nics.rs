//! Binding the appliance's PCI NICs to `vfio-pci` for DPDK, and giving
//! them back (`vpn-setup nics`).
//!
//! ```text
//!   configured ports ──► PCI addresses (vdevs are left alone)
//!   each device:  present?  ── no ──► DeviceAbsent
//!                 bound to vfio-pci already? ── yes ──► nothing to do
//!                 a kernel interface of it up with a global address?
//!                                   ── yes, no --force ──► InUse
//!                 IOMMU group?      ── no, no-IOMMU not allowed ──► NoIommu
//!                                   ── no, allowed ──► vfio no-IOMMU mode
//!                 modprobe vfio-pci ── absent ──► ModuleMissing
//!                 record the driver it had (state file, first binding only)
//!                 driver_override = vfio-pci, unbind, drivers_probe
//!                 bound to vfio-pci now? ── no ──► DidNotBind
//!   --restore:    for each recorded device: clear driver_override,
//!                 unbind from vfio-pci, drivers_probe (the kernel's own
//!                 driver takes it back), forget it
//! ```
//!
//! The binding goes through `driver_override` (as `dpdk-devbind` does)
//! rather than `new_id`, so only the named devices change drivers, never
//! other NICs of the same model. What the kernel exposes is reached
//! through the [`Host`] trait: [`SysHost`] is the real machine (sysfs,
//! `modprobe`, `ip`), and the tests give a simulated one, since no test
//! may touch a NIC of the machine it runs on (the real binding is tested
//! inside a VM).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use control::config::ApplianceConfig;

/// The driver DPDK's PCI PMDs need.
pub const VFIO_PCI: &str = "vfio-pci";

/// Where `vpn-setup nics` remembers the drivers it replaced.
pub const DEFAULT_STATE: &str = "/var/lib/vpn/nics.state";

/// A PCI address in its full form, `dddd:bb:dd.f` (lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PciAddress(String);

impl PciAddress {
    /// The address of a port's `device` (`0000:03:00.0`, `03:00.0`, with
    /// optional `,devargs`), or `None` for a virtual device.
    #[must_use]
    pub fn of_device(device: &str) -> Option<Self> {
        let addr = device.split(',').next()?.trim();
        let (domain, rest) = match addr.matches(':').count() {
            1 => ("0000", addr),
            2 => addr.split_once(':')?,
            _ => return None,
        };
        let (bus, rest) = rest.split_once(':')?;
        let (dev, func) = rest.split_once('.')?;
        let hex = |s: &str, len: usize| s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit());
        let ok = hex(domain, 4)
            && hex(bus, 2)
            && hex(dev, 2)
            && func.len() == 1
            && func.chars().all(|c| ('0'..='7').contains(&c));
        ok.then(|| Self(format!("{domain}:{bus}:{dev}.{func}").to_ascii_lowercase()))
    }

    /// The address text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The PCI devices of the configuration's ports, each once, with the
/// port name that names it.
#[must_use]
pub fn configured_devices(config: &ApplianceConfig) -> Vec<(String, PciAddress)> {
    let mut seen = Vec::new();
    for p in &config.dataplane.ports {
        if let Some(a) = PciAddress::of_device(&p.device)
            && !seen.iter().any(|(_, s)| *s == a)
        {
            seen.push((p.name.clone(), a));
        }
    }
    seen
}

/// What the kernel exposes about PCI devices and drivers.
pub trait Host {
    /// Whether the device exists on the bus.
    fn device_exists(&self, dev: &PciAddress) -> bool;
    /// The driver bound to the device, if any.
    fn driver(&self, dev: &PciAddress) -> Option<String>;
    /// Whether the device belongs to an IOMMU group.
    fn has_iommu_group(&self, dev: &PciAddress) -> bool;
    /// The kernel network interfaces of the device.
    fn interfaces(&self, dev: &PciAddress) -> Vec<String>;
    /// The global-scope addresses on an interface that is up (empty when
    /// it is down).
    fn addresses_in_use(&self, iface: &str) -> Vec<String>;
    /// Load a kernel module with parameters (`modprobe`).
    ///
    /// # Errors
    /// The module cannot be loaded.
    fn load_module(&mut self, name: &str, params: &[&str]) -> io::Result<()>;
    /// Whether a driver is registered (`/sys/bus/pci/drivers/NAME`).
    fn driver_registered(&self, name: &str) -> bool;
    /// Turn on vfio's no-IOMMU mode.
    ///
    /// # Errors
    /// The parameter cannot be written.
    fn enable_no_iommu(&mut self) -> io::Result<()>;
    /// Set (`Some`) or clear (`None`) the device's `driver_override`.
    ///
    /// # Errors
    /// The sysfs write failed.
    fn set_driver_override(&mut self, dev: &PciAddress, driver: Option<&str>) -> io::Result<()>;
    /// Unbind the device from its driver.
    ///
    /// # Errors
    /// The sysfs write failed.
    fn unbind(&mut self, dev: &PciAddress) -> io::Result<()>;
    /// Ask the kernel to bind a driver to the device (`drivers_probe`).
    ///
    /// # Errors
    /// The sysfs write failed.
    fn probe(&mut self, dev: &PciAddress) -> io::Result<()>;
}

/// Why a device could not be bound or restored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NicError {
    /// The configured device is not on the PCI bus.
    #[error("{port}: PCI device {dev} is not present (check the address with `lspci -D`)")]
    DeviceAbsent {
        /// Port name.
        port: String,
        /// The address.
        dev: PciAddress,
    },
    /// The kernel uses the device: refused without `--force`.
    #[error(
        "{port}: PCI device {dev} is in use by the kernel ({driver}): interface {iface} is up with {addresses}; \
         take it down or remove its addresses, or run with --force"
    )]
    InUse {
        /// Port name.
        port: String,
        /// The address.
        dev: PciAddress,
        /// Its kernel driver.
        driver: String,
        /// The interface.
        iface: String,
        /// Its addresses.
        addresses: String,
    },
    /// No IOMMU and no-IOMMU mode not allowed.
    #[error(
        "{port}: PCI device {dev} has no IOMMU group (no IOMMU, or it is off: boot with intel_iommu=on / amd_iommu=on); \
         set dataplane.allow_no_iommu = true to use vfio's unsafe no-IOMMU mode"
    )]
    NoIommu {
        /// Port name.
        port: String,
        /// The address.
        dev: PciAddress,
    },
    /// vfio-pci cannot be loaded.
    #[error("the vfio-pci kernel module cannot be loaded: {0}")]
    ModuleMissing(String),
    /// No-IOMMU mode could not be turned on.
    #[error("cannot turn on vfio's no-IOMMU mode: {0}")]
    NoIommuMode(#[source] io::Error),
    /// A sysfs write failed.
    #[error("{dev}: {what}: {source}")]
    Sysfs {
        /// The address.
        dev: PciAddress,
        /// What was written.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The probe left the device on another driver.
    #[error("{dev}: still bound to {now} instead of {want} after the probe (see `dmesg`)")]
    DidNotBind {
        /// The address.
        dev: PciAddress,
        /// The driver wanted.
        want: String,
        /// The driver it has (or `no driver`).
        now: String,
    },
    /// The state file cannot be read or written.
    #[error("state file {path}: {source}")]
    State {
        /// Its path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// The drivers devices had before `vpn-setup nics` bound them (`None`:
/// no driver), kept in a state file of `ADDRESS DRIVER` lines (`-` for
/// none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NicState {
    /// Original driver per device.
    pub original: BTreeMap<PciAddress, Option<String>>,
}

impl NicState {
    /// Read the state file; a missing file is an empty state.
    ///
    /// # Errors
    /// [`NicError::State`] when it cannot be read.
    pub fn load(path: &Path) -> Result<Self, NicError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(NicError::State {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let mut original = BTreeMap::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let mut parts = line.split_whitespace();
            let (Some(a), Some(d)) = (parts.next(), parts.next()) else {
                continue;
            };
            if let Some(a) = PciAddress::of_device(a) {
                original.insert(a, (d != "-").then(|| d.to_owned()));
            }
        }
        Ok(Self { original })
    }

    /// Write the state file atomically (temporary file, fsync, rename).
    ///
    /// # Errors
    /// [`NicError::State`].
    pub fn save(&self, path: &Path) -> Result<(), NicError> {
        let err = |source| NicError::State {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut text = String::new();
        for (a, d) in &self.original {
            text.push_str(&format!("{a} {}\n", d.as_deref().unwrap_or("-")));
        }
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(err)?;
            f.write_all(text.as_bytes()).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)
    }
}

/// What happened to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It was bound to vfio-pci already.
    AlreadyBound,
    /// Bound now, taken from this driver (`None`: it had none).
    Bound {
        /// The driver it had.
        from: Option<String>,
    },
    /// Given back to this driver (`None`: left without one).
    Restored {
        /// The driver it has now.
        to: Option<String>,
    },
}

/// Options of [`bind_all`].
#[derive(Debug, Clone, Copy, Default)]
pub struct BindOptions {
    /// Bind even when a kernel interface of the device is up with
    /// addresses.
    pub force: bool,
    /// vfio's no-IOMMU mode is allowed (`dataplane.allow_no_iommu`).
    pub allow_no_iommu: bool,
}

/// Bind every device to vfio-pci. Stops at the first error: devices bound
/// before it stay bound and recorded in `state` (so `--restore` gives
/// them back).
///
/// # Errors
/// [`NicError`], naming the port and the device.
pub fn bind_all(
    host: &mut dyn Host,
    devices: &[(String, PciAddress)],
    options: BindOptions,
    state: &mut NicState,
) -> Result<Vec<(PciAddress, Outcome)>, NicError> {
    // Check everything before changing anything.
    let mut need_no_iommu = false;
    for (port, dev) in devices {
        if !host.device_exists(dev) {
            return Err(NicError::DeviceAbsent {
                port: port.clone(),
                dev: dev.clone(),
            });
        }
        let driver = host.driver(dev);
        if driver.as_deref() == Some(VFIO_PCI) {
            continue;
        }
        if !options.force
            && let Some(driver) = &driver
        {
            for iface in host.interfaces(dev) {
                let addresses = host.addresses_in_use(&iface);
                if !addresses.is_empty() {
                    return Err(NicError::InUse {
                        port: port.clone(),
                        dev: dev.clone(),
                        driver: driver.clone(),
                        iface,
                        addresses: addresses.join(", "),
                    });
                }
            }
        }
        if !host.has_iommu_group(dev) {
            if !options.allow_no_iommu {
                return Err(NicError::NoIommu {
                    port: port.clone(),
                    dev: dev.clone(),
                });
            }
            need_no_iommu = true;
        }
    }
    if devices.is_empty() {
        return Ok(Vec::new());
    }
    if need_no_iommu {
        host.load_module("vfio", &["enable_unsafe_noiommu_mode=1"])
            .map_err(|e| NicError::ModuleMissing(format!("vfio: {e}")))?;
        host.enable_no_iommu().map_err(NicError::NoIommuMode)?;
    }
    host.load_module(VFIO_PCI, &[])
        .map_err(|e| NicError::ModuleMissing(e.to_string()))?;
    if !host.driver_registered(VFIO_PCI) {
        return Err(NicError::ModuleMissing(
            "modprobe succeeded but /sys/bus/pci/drivers/vfio-pci is absent".to_owned(),
        ));
    }
    let mut done = Vec::new();
    for (_, dev) in devices {
        let from = host.driver(dev);
        if from.as_deref() == Some(VFIO_PCI) {
            done.push((dev.clone(), Outcome::AlreadyBound));
            continue;
        }
        let sysfs = |what| {
            move |source| NicError::Sysfs {
                dev: dev.clone(),
                what,
                source,
            }
        };
        host.set_driver_override(dev, Some(VFIO_PCI))
            .map_err(sysfs("driver_override"))?;
        if from.is_some() {
            host.unbind(dev).map_err(sysfs("unbind"))?;
        }
        // Recorded once the device left its driver: a failure after this
        // point is undone by --restore.
        state
            .original
            .entry(dev.clone())
            .or_insert_with(|| from.clone());
        host.probe(dev).map_err(sysfs("drivers_probe"))?;
        let now = host.driver(dev);
        if now.as_deref() != Some(VFIO_PCI) {
            return Err(NicError::DidNotBind {
                dev: dev.clone(),
                want: VFIO_PCI.to_owned(),
                now: now.unwrap_or_else(|| "no driver".to_owned()),
            });
        }
        done.push((dev.clone(), Outcome::Bound { from }));
    }
    Ok(done)
}

/// Give every device recorded in `state` back to the kernel's driver and
/// forget it. A device no longer present is forgotten too.
///
/// # Errors
/// [`NicError`] for the first device that cannot be given back (it stays
/// recorded).
pub fn restore_all(
    host: &mut dyn Host,
    state: &mut NicState,
) -> Result<Vec<(PciAddress, Outcome)>, NicError> {
    let mut done = Vec::new();
    let devices: Vec<(PciAddress, Option<String>)> = state
        .original
        .iter()
        .map(|(a, d)| (a.clone(), d.clone()))
        .collect();
    for (dev, original) in devices {
        if !host.device_exists(&dev) {
            state.original.remove(&dev);
            continue;
        }
        let sysfs = |what| {
            let dev = dev.clone();
            move |source| NicError::Sysfs { dev, what, source }
        };
        host.set_driver_override(&dev, None)
            .map_err(sysfs("driver_override"))?;
        if host.driver(&dev).is_some() {
            host.unbind(&dev).map_err(sysfs("unbind"))?;
        }
        if original.is_some() {
            host.probe(&dev).map_err(sysfs("drivers_probe"))?;
        }
        let now = host.driver(&dev);
        if original.is_some() && now != original {
            return Err(NicError::DidNotBind {
                dev,
                want: original.unwrap_or_default(),
                now: now.unwrap_or_else(|| "no driver".to_owned()),
            });
        }
        state.original.remove(&dev);
        done.push((dev, Outcome::Restored { to: now }));
    }
    Ok(done)
}

/// The machine: sysfs under `sys` (normally `/sys`), `modprobe`, `ip`.
#[derive(Debug, Clone)]
pub struct SysHost {
    sys: PathBuf,
}

impl Default for SysHost {
    fn default() -> Self {
        Self::new("/sys")
    }
}

impl SysHost {
    /// sysfs mounted at `sys`.
    #[must_use]
    pub fn new(sys: impl Into<PathBuf>) -> Self {
        Self { sys: sys.into() }
    }

    fn device(&self, dev: &PciAddress) -> PathBuf {
        self.sys.join("bus/pci/devices").join(dev.as_str())
    }

    fn write(path: &Path, value: &str) -> io::Result<()> {
        std::fs::write(path, value)
    }
}

fn link_name(path: &Path) -> Option<String> {
    let target = std::fs::read_link(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

impl Host for SysHost {
    fn device_exists(&self, dev: &PciAddress) -> bool {
        self.device(dev).exists()
    }

    fn driver(&self, dev: &PciAddress) -> Option<String> {
        link_name(&self.device(dev).join("driver"))
    }

    fn has_iommu_group(&self, dev: &PciAddress) -> bool {
        self.device(dev).join("iommu_group").exists()
    }

    fn interfaces(&self, dev: &PciAddress) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.device(dev).join("net")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = dir
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn addresses_in_use(&self, iface: &str) -> Vec<String> {
        let up = std::fs::read_to_string(self.sys.join("class/net").join(iface).join("operstate"))
            .is_ok_and(|s| s.trim() != "down");
        if !up {
            return Vec::new();
        }
        let Ok(out) = std::process::Command::new("ip")
            .args(["-o", "addr", "show", "dev", iface, "scope", "global"])
            .output()
        else {
            return Vec::new();
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                w.find(|t| *t == "inet" || *t == "inet6")?;
                w.next().map(str::to_owned)
            })
            .collect()
    }

    fn load_module(&mut self, name: &str, params: &[&str]) -> io::Result<()> {
        let out = std::process::Command::new("modprobe")
            .arg(name)
            .args(params)
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ))
        }
    }

    fn driver_registered(&self, name: &str) -> bool {
        self.sys.join("bus/pci/drivers").join(name).exists()
    }

    fn enable_no_iommu(&mut self) -> io::Result<()> {
        Self::write(
            &self
                .sys
                .join("module/vfio/parameters/enable_unsafe_noiommu_mode"),
            "1",
        )
    }

    fn set_driver_override(&mut self, dev: &PciAddress, driver: Option<&str>) -> io::Result<()> {
        // An empty line clears the override.
        Self::write(
            &self.device(dev).join("driver_override"),
            &format!("{}\n", driver.unwrap_or("")),
        )
    }

    fn unbind(&mut self, dev: &PciAddress) -> io::Result<()> {
        Self::write(&self.device(dev).join("driver/unbind"), dev.as_str())
    }

    fn probe(&mut self, dev: &PciAddress) -> io::Result<()> {
        Self::write(&self.sys.join("bus/pci/drivers_probe"), dev.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulated PCI bus: devices with a default driver, the kernel's
    /// probe honouring `driver_override` as the real one does.
    #[derive(Debug, Default)]
    struct FakeBus {
        devices: BTreeMap<PciAddress, FakeDevice>,
        modules: Vec<String>,
        module_missing: bool,
        no_iommu_mode: bool,
        writes: Vec<String>,
    }

    #[derive(Debug, Clone)]
    struct FakeDevice {
        default_driver: Option<String>,
        driver: Option<String>,
        override_: Option<String>,
        iommu: bool,
        ifaces: Vec<(String, Vec<String>)>,
    }

    impl FakeBus {
        fn nic(mut self, a: &str, driver: &str, iommu: bool) -> Self {
            self.devices.insert(
                PciAddress::of_device(a).unwrap(),
                FakeDevice {
                    default_driver: Some(driver.to_owned()),
                    driver: Some(driver.to_owned()),
                    override_: None,
                    iommu,
                    ifaces: vec![(format!("eth-{a}"), Vec::new())],
                },
            );
            self
        }
        fn dev(&mut self, a: &PciAddress) -> &mut FakeDevice {
            self.devices.get_mut(a).unwrap()
        }
    }

    impl Host for FakeBus {
        fn device_exists(&self, dev: &PciAddress) -> bool {
            self.devices.contains_key(dev)
        }
        fn driver(&self, dev: &PciAddress) -> Option<String> {
            self.devices.get(dev)?.driver.clone()
        }
        fn has_iommu_group(&self, dev: &PciAddress) -> bool {
            self.devices.get(dev).is_some_and(|d| d.iommu)
        }
        fn interfaces(&self, dev: &PciAddress) -> Vec<String> {
            let d = &self.devices[dev];
            if d.driver == d.default_driver {
                d.ifaces.iter().map(|(n, _)| n.clone()).collect()
            } else {
                Vec::new()
            }
        }
        fn addresses_in_use(&self, iface: &str) -> Vec<String> {
            self.devices
                .values()
                .flat_map(|d| &d.ifaces)
                .find(|(n, _)| n == iface)
                .map(|(_, a)| a.clone())
                .unwrap_or_default()
        }
        fn load_module(&mut self, name: &str, params: &[&str]) -> io::Result<()> {
            if self.module_missing {
                return Err(io::Error::other(format!("FATAL: Module {name} not found")));
            }
            self.modules.push(format!("{name} {}", params.join(" ")));
            Ok(())
        }
        fn driver_registered(&self, name: &str) -> bool {
            self.modules.iter().any(|m| m.starts_with(name))
        }
        fn enable_no_iommu(&mut self) -> io::Result<()> {
            self.no_iommu_mode = true;
            Ok(())
        }
        fn set_driver_override(
            &mut self,
            dev: &PciAddress,
            driver: Option<&str>,
        ) -> io::Result<()> {
            self.writes.push(format!("override {dev} {driver:?}"));
            self.dev(dev).override_ = driver.map(str::to_owned);
            Ok(())
        }
        fn unbind(&mut self, dev: &PciAddress) -> io::Result<()> {
            self.writes.push(format!("unbind {dev}"));
            self.dev(dev).driver = None;
            Ok(())
        }
        fn probe(&mut self, dev: &PciAddress) -> io::Result<()> {
            self.writes.push(format!("probe {dev}"));
            let no_iommu = self.no_iommu_mode;
            let d = self.dev(dev);
            if d.driver.is_none() {
                d.driver = match &d.override_ {
                    // vfio-pci refuses a device without a group unless
                    // no-IOMMU mode is on, as the kernel does.
                    Some(o) if o == VFIO_PCI && !d.iommu && !no_iommu => None,
                    Some(o) => Some(o.clone()),
                    None => d.default_driver.clone(),
                };
            }
            Ok(())
        }
    }

    fn addr(s: &str) -> PciAddress {
        PciAddress::of_device(s).unwrap()
    }

    fn ports(list: &[&str]) -> Vec<(String, PciAddress)> {
        list.iter()
            .enumerate()
            .map(|(i, a)| (format!("p{i}"), addr(a)))
            .collect()
    }

    #[test]
    fn addresses_are_parsed_strictly() {
        assert_eq!(addr("03:00.0").as_str(), "0000:03:00.0");
        assert_eq!(addr("0000:0A:1f.7,rx_vec_en=0").as_str(), "0000:0a:1f.7");
        for vdev in [
            "net_tap0,iface=x",
            "net_af_packet0,iface=v",
            "0000:03:00.8",
            "3:00.0",
            "0000:03:00",
            "a:b:c:d",
            "",
        ] {
            assert_eq!(PciAddress::of_device(vdev), None, "{vdev}");
        }
    }

    #[test]
    fn binds_records_and_restores() {
        let mut bus = FakeBus::default().nic("0000:00:03.0", "e1000e", true).nic(
            "0000:00:04.0",
            "virtio-pci",
            true,
        );
        let devices = ports(&["0000:00:03.0", "00:04.0"]);
        let mut state = NicState::default();
        let done = bind_all(&mut bus, &devices, BindOptions::default(), &mut state).unwrap();
        assert_eq!(
            done,
            vec![
                (
                    addr("00:03.0"),
                    Outcome::Bound {
                        from: Some("e1000e".into())
                    }
                ),
                (
                    addr("00:04.0"),
                    Outcome::Bound {
                        from: Some("virtio-pci".into())
                    }
                ),
            ]
        );
        assert_eq!(bus.driver(&addr("00:03.0")).as_deref(), Some(VFIO_PCI));
        assert_eq!(
            state.original[&addr("00:04.0")].as_deref(),
            Some("virtio-pci")
        );
        assert!(!bus.no_iommu_mode);

        // A second run changes nothing and keeps the original drivers.
        let before = bus.writes.len();
        let again = bind_all(&mut bus, &devices, BindOptions::default(), &mut state).unwrap();
        assert!(again.iter().all(|(_, o)| *o == Outcome::AlreadyBound));
        assert_eq!(bus.writes.len(), before);
        assert_eq!(state.original[&addr("00:03.0")].as_deref(), Some("e1000e"));

        let restored = restore_all(&mut bus, &mut state).unwrap();
        assert_eq!(restored.len(), 2);
        assert_eq!(bus.driver(&addr("00:03.0")).as_deref(), Some("e1000e"));
        assert_eq!(bus.driver(&addr("00:04.0")).as_deref(), Some("virtio-pci"));
        assert!(state.original.is_empty());
        assert!(bus.devices.values().all(|d| d.override_.is_none()));
    }

    #[test]
    fn refusals_change_nothing() {
        let mut bus = FakeBus::default().nic("0000:00:03.0", "e1000e", true);
        let mut state = NicState::default();

        let absent = bind_all(
            &mut bus,
            &ports(&["00:03.0", "00:09.0"]),
            BindOptions::default(),
            &mut state,
        )
        .unwrap_err();
        assert!(matches!(absent, NicError::DeviceAbsent { .. }), "{absent}");
        assert!(absent.to_string().contains("0000:00:09.0 is not present"));

        bus.dev(&addr("00:03.0")).ifaces[0].1 = vec!["192.0.2.1/24".into()];
        let in_use = bind_all(
            &mut bus,
            &ports(&["00:03.0"]),
            BindOptions::default(),
            &mut state,
        )
        .unwrap_err();
        assert!(
            in_use.to_string().contains("is up with 192.0.2.1/24")
                && in_use.to_string().contains("--force"),
            "{in_use}"
        );
        assert!(bus.writes.is_empty() && state.original.is_empty());

        // --force takes it anyway.
        let forced = BindOptions {
            force: true,
            ..BindOptions::default()
        };
        bind_all(&mut bus, &ports(&["00:03.0"]), forced, &mut state).unwrap();
        assert_eq!(bus.driver(&addr("00:03.0")).as_deref(), Some(VFIO_PCI));
    }

    #[test]
    fn no_iommu_needs_the_operators_consent() {
        let mut bus = FakeBus::default().nic("0000:00:03.0", "e1000e", false);
        let mut state = NicState::default();
        let devices = ports(&["00:03.0"]);
        let refused = bind_all(&mut bus, &devices, BindOptions::default(), &mut state).unwrap_err();
        assert!(matches!(refused, NicError::NoIommu { .. }));
        assert!(refused.to_string().contains("allow_no_iommu"), "{refused}");
        assert!(bus.writes.is_empty());

        let allowed = BindOptions {
            allow_no_iommu: true,
            ..BindOptions::default()
        };
        bind_all(&mut bus, &devices, allowed, &mut state).unwrap();
        assert!(bus.no_iommu_mode);
        assert!(
            bus.modules
                .iter()
                .any(|m| m == "vfio enable_unsafe_noiommu_mode=1")
        );
        assert_eq!(bus.driver(&addr("00:03.0")).as_deref(), Some(VFIO_PCI));
    }

    #[test]
    fn missing_module_is_reported() {
        let mut bus = FakeBus::default().nic("0000:00:03.0", "e1000e", true);
        bus.module_missing = true;
        let e = bind_all(
            &mut bus,
            &ports(&["00:03.0"]),
            BindOptions::default(),
            &mut NicState::default(),
        )
        .unwrap_err();
        assert!(matches!(e, NicError::ModuleMissing(_)), "{e}");
        assert_eq!(bus.driver(&addr("00:03.0")).as_deref(), Some("e1000e"));
    }

    #[test]
    fn a_failed_probe_stays_restorable() {
        // The device has a group, but vfio-pci is simulated to refuse it
        // by clearing the group after the checks: the probe leaves it
        // without a driver; the state remembers e1000e.
        let mut bus = FakeBus::default().nic("0000:00:03.0", "e1000e", true);
        let mut state = NicState::default();
        struct Refusing<'a>(&'a mut FakeBus);
        impl Host for Refusing<'_> {
            fn device_exists(&self, d: &PciAddress) -> bool {
                self.0.device_exists(d)
            }
            fn driver(&self, d: &PciAddress) -> Option<String> {
                self.0.driver(d)
            }
            fn has_iommu_group(&self, d: &PciAddress) -> bool {
                self.0.has_iommu_group(d)
            }
            fn interfaces(&self, d: &PciAddress) -> Vec<String> {
                self.0.interfaces(d)
            }
            fn addresses_in_use(&self, i: &str) -> Vec<String> {
                self.0.addresses_in_use(i)
            }
            fn load_module(&mut self, n: &str, p: &[&str]) -> io::Result<()> {
                self.0.load_module(n, p)
            }
            fn driver_registered(&self, n: &str) -> bool {
                self.0.driver_registered(n)
            }
            fn enable_no_iommu(&mut self) -> io::Result<()> {
                self.0.enable_no_iommu()
            }
            fn set_driver_override(&mut self, d: &PciAddress, v: Option<&str>) -> io::Result<()> {
                self.0.set_driver_override(d, v)
            }
            fn unbind(&mut self, d: &PciAddress) -> io::Result<()> {
                self.0.unbind(d)
            }
            fn probe(&mut self, d: &PciAddress) -> io::Result<()> {
                self.0.dev(d).iommu = false;
                self.0.probe(d)
            }
        }
        let e = bind_all(
            &mut Refusing(&mut bus),
            &ports(&["00:03.0"]),
            BindOptions::default(),
            &mut state,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no driver"), "{e}");
        assert_eq!(state.original[&addr("00:03.0")].as_deref(), Some("e1000e"));
        restore_all(&mut bus, &mut state).unwrap();
        assert_eq!(bus.driver(&addr("00:03.0")).as_deref(), Some("e1000e"));
    }

    #[test]
    fn state_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/nics.state");
        assert_eq!(NicState::load(&path).unwrap(), NicState::default());
        let mut s = NicState::default();
        s.original.insert(addr("00:03.0"), Some("e1000e".into()));
        s.original.insert(addr("00:04.0"), None);
        s.save(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "0000:00:03.0 e1000e\n0000:00:04.0 -\n"
        );
        assert_eq!(NicState::load(&path).unwrap(), s);
    }

    #[test]
    fn sys_host_reads_a_sysfs_tree() {
        // The read side of SysHost against a sysfs-shaped directory.
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        let dev = sys.join("bus/pci/devices/0000:00:03.0");
        std::fs::create_dir_all(dev.join("net/ens3")).unwrap();
        std::fs::create_dir_all(sys.join("bus/pci/drivers/e1000e")).unwrap();
        std::fs::create_dir_all(sys.join("kernel/iommu_groups/7")).unwrap();
        std::os::unix::fs::symlink(sys.join("bus/pci/drivers/e1000e"), dev.join("driver")).unwrap();
        std::os::unix::fs::symlink(sys.join("kernel/iommu_groups/7"), dev.join("iommu_group"))
            .unwrap();
        let host = SysHost::new(sys);
        let a = addr("00:03.0");
        assert!(host.device_exists(&a) && !host.device_exists(&addr("00:04.0")));
        assert_eq!(host.driver(&a).as_deref(), Some("e1000e"));
        assert!(host.has_iommu_group(&a));
        assert_eq!(host.interfaces(&a), vec!["ens3".to_owned()]);
        assert!(host.driver_registered("e1000e") && !host.driver_registered(VFIO_PCI));
        // No operstate file: not up, so no addresses in use.
        assert!(host.addresses_in_use("ens3").is_empty());
    }
}
