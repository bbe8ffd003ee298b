//! `node-agent`: the only code the provisioner runs on a server. It never
//! talks to a BMC.
//!
//! `inspect` ([`inspect`]) reads the hardware inventory and `apply`
//! ([`apply`]) makes the running host match a host plan (SR-IOV VFs and their
//! driver, hugepages per NUMA node); both work through a
//! [`sysroot::SysRoot`], so they run in tests on fake or recorded sysfs trees.
//! `init` ([`init`]) is PID 1 of the inspection ramdisk: it brings up the boot
//! NIC, reports the inventory to the provisioner and obeys its commands
//! (`apply` included). [`host`] boots the installed A/B host image: as PID 1
//! of a UKI's initramfs it verifies and mounts the dm-verity root and
//! switches to it, then as `node-agent host` (PID 1 of the host) checks
//! health, blesses the boot (systemd-boot's boot counting) and reports a
//! rollback. `upgrade` ([`upgrade`]) writes a new host image version into the
//! inactive slot. [`deploy`] writes the host image onto the root disk at
//! deployment (and `node-agent write-image` without the provisioner), and
//! erases disks (`clean`).

pub mod apply;
pub mod deploy;
pub mod host;
pub mod init;
pub mod inspect;
pub mod net;
pub mod pe;
pub mod pid1;
pub mod sysroot;
pub mod upgrade;
