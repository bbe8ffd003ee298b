//! The installed host: booting the A/B image (verity root, switch_root, host
//! mode) and upgrading it. See ARCHITECTURE.md, "The host image".

pub mod boot;
pub mod data;
pub mod disk;
pub mod dm;
pub mod entries;
pub mod esp;
pub mod mode;
pub mod watchdog;
