//! The library behind `provisioner image build`: the inspection ramdisk (Debian's kernel
//! and a cpio initramfs with `node-agent` as init) and, later, the A/B host disk image.
//!
//! Modules: [`kernel`] fetches and caches Debian's kernel package with apt; [`cpio`] writes
//! the newc archives the kernel unpacks; [`progress`] is how long steps are reported.
//!
//! Invariant: building is deterministic (same inputs, same bytes) and never needs root or
//! loop devices. Pure cores (cpio, package-field parsing) are apart from the few functions
//! that run commands or touch files.

pub mod cpio;
pub mod kernel;
pub mod progress;
