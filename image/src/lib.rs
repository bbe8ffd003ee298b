//! The host image builder (in progress).
