//! `node-agent`: the only code the provisioner runs on a server. In the
//! inspection ramdisk it inventories the hardware and writes the host image;
//! in the installed host it applies the host plan. It never talks to a BMC.
//!
//! Today: `apply` ([`apply`]), which makes the running host match a host
//! plan (SR-IOV VFs and their driver, hugepages per NUMA node), and
//! `inspect` ([`inspect`]), which reads the hardware inventory; both work
//! through a [`sysroot::SysRoot`], so they run in tests on fake or recorded
//! sysfs trees. The ramdisk mode arrives with the inspection work.

pub mod apply;
pub mod init;
pub mod inspect;
pub mod sysroot;
