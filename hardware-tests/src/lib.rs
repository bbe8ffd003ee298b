//! The QEMU virtual lab (in progress).
