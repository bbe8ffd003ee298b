//! The installed host: booting the A/B image and running it.
//!
//! - [`boot`]: PID 1 of a UKI's initramfs: finds the slot, fully checks and
//!   mounts the dm-verity root, mounts `/var`, switches root.
//! - [`mode`]: `node-agent host`, PID 1 of the host: health checks, bless,
//!   rollback report, status, console shell.
//! - [`config`]: the sealed node config of the `config` partition, opened
//!   with the image's trust key; [`kexec`]: the plan's kernel arguments (the
//!   host boot boots the UKI's kernel again with them); [`report`]: host
//!   mode's plan, network and report to the provisioner.
//! - Pure decisions: [`entries`] (boot entries and EFI variables),
//!   [`data::grown_end`], [`boot::choose_slot`]; partitions by name: [`disk`].
//! - Edges: [`dm`] (the one module with `unsafe`: ioctls), [`esp`] (rename
//!   and efivars), [`fat`] (the raw ESP directory editor that repairs a UKI
//!   under two names), [`watchdog`], [`data`] (grow the data partition).
//!
//! See ARCHITECTURE.md, "host".

pub mod boot;
pub mod config;
pub mod data;
pub mod disk;
pub mod dm;
pub mod entries;
pub mod esp;
pub mod fat;
pub mod kexec;
pub mod mode;
pub mod report;
pub mod watchdog;
