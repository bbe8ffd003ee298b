//! Hardware profiles (in progress).
