//! The library behind `provisioner image build`: the inspection ramdisk (kernel
//! and cpio initramfs with `node-agent` as init) and the A/B host disk image
//! (GPT, ESP with unified kernel images, read-only root slots, config, data).
//!
//! Invariant: building is deterministic (same inputs, same bytes) and never
//! needs root or loop devices. Nothing is built yet; see ARCHITECTURE.md.
