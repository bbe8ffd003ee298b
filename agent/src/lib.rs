//! `node-agent`: the only code the provisioner runs on a server. In the
//! inspection ramdisk it inventories the hardware and writes the host image;
//! in the installed host it applies the host plan. It never talks to a BMC.
//!
//! Today: `apply` ([`apply`]), which makes the running host match a host
//! plan (SR-IOV VFs and their driver, hugepages per NUMA node) through a
//! [`sysroot::SysRoot`], so it runs in tests on a fake sysfs tree.
//! `inspect` and the ramdisk mode arrive with the inspection work.

pub mod apply;
pub mod sysroot;
