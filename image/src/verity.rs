//! The dm-verity hash tree of a root filesystem, as `veritysetup format --no-superblock`
//! writes it: format 1, SHA-256, 4096-byte data and hash blocks, a 32-byte salt.
//!
//! Each digest is `sha256(salt || block)`. Level 0 hashes the data blocks; 128 digests
//! fill a hash block, the last block of a level is zero-padded; each next level hashes
//! the blocks of the level below until a level is one block. On disk the top level comes
//! first, then the next lower, down to level 0; the root hash is `sha256(salt || top
//! block)`. One data block is the degenerate case: no hash block at all, the root hash
//! is that block's digest (the kernel's and veritysetup's level count is 0 there).
//!
//! Invariants: pure (bytes in, bytes out, no I/O); the same data and salt always give the
//! same tree. A test of the slow tier compares it with `veritysetup` byte for byte.

use sha2::{Digest as _, Sha256};

/// Data and hash block size (`model::host::VERITY_BLOCK`).
pub const BLOCK: usize = model::host::VERITY_BLOCK as usize;
/// Digests per hash block (format 1 stores each 32-byte digest unpadded).
pub const DIGESTS_PER_BLOCK: usize = BLOCK / model::host::DIGEST;

/// A computed hash tree.
#[derive(Clone, PartialEq, Eq)]
pub struct Tree {
    /// The hash blocks as they go on disk after the data (top level first).
    pub bytes: Vec<u8>,
    /// The root hash.
    pub root: [u8; 32],
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree")
            .field("hash_blocks", &(self.bytes.len() / BLOCK))
            .field("root", &hex(&self.root))
            .finish()
    }
}

/// Why no tree can be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerityError {
    #[error(
        "dm-verity data of {len} bytes: it must be a non-zero multiple of {BLOCK} bytes (pad the filesystem image)"
    )]
    BadLength { len: usize },
}

/// The number of hash blocks per level for `data_blocks` data blocks, level 0 first
/// (none for a single data block).
pub fn level_sizes(data_blocks: usize) -> Vec<usize> {
    let mut levels = vec![];
    let mut blocks = data_blocks;
    while blocks > 1 {
        blocks = blocks.div_ceil(DIGESTS_PER_BLOCK);
        levels.push(blocks);
    }
    levels
}

fn digest(salt: &[u8; 32], block: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

/// Hashes every block of `input` and packs the digests into zero-padded hash blocks.
fn hash_level(input: &[u8], salt: &[u8; 32]) -> Vec<u8> {
    let blocks = input.len() / BLOCK;
    let mut out = vec![0u8; blocks.div_ceil(DIGESTS_PER_BLOCK) * BLOCK];
    for (i, block) in input.chunks_exact(BLOCK).enumerate() {
        out[i * 32..(i + 1) * 32].copy_from_slice(&digest(salt, block));
    }
    out
}

/// Computes the hash tree of `data` (a whole number of [`BLOCK`]s, at least one).
pub fn tree(data: &[u8], salt: &[u8; 32]) -> Result<Tree, VerityError> {
    if data.is_empty() || !data.len().is_multiple_of(BLOCK) {
        return Err(VerityError::BadLength { len: data.len() });
    }
    if data.len() == BLOCK {
        return Ok(Tree {
            bytes: vec![],
            root: digest(salt, data),
        });
    }
    let mut levels = vec![hash_level(data, salt)];
    while let Some(last) = levels.last()
        && last.len() > BLOCK
    {
        let next = hash_level(last, salt);
        levels.push(next);
    }
    let root = digest(salt, levels.last().expect("at least one level"));
    let bytes = levels.into_iter().rev().flatten().collect();
    Ok(Tree { bytes, root })
}

/// Lowercase hex, as the UKI command line and the manifest carry hashes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(blocks: usize) -> Vec<u8> {
        (0..blocks * BLOCK)
            .map(|i| (i / BLOCK) as u8 ^ 0x5a)
            .collect()
    }

    #[test]
    fn one_block_has_no_hash_block_and_its_digest_as_root() {
        let salt = [7u8; 32];
        let t = tree(&data(1), &salt).unwrap();
        assert!(t.bytes.is_empty());
        assert_eq!(t.root, digest(&salt, &data(1)));
        let t = tree(&data(2), &salt).unwrap();
        assert_eq!(t.bytes.len(), BLOCK);
        assert_eq!(t.bytes[..32], digest(&salt, &data(2)[..BLOCK]));
        assert!(t.bytes[64..].iter().all(|b| *b == 0));
        assert_eq!(t.root, digest(&salt, &t.bytes));
    }

    #[test]
    fn levels_split_at_128_digests() {
        assert_eq!(level_sizes(1), Vec::<usize>::new());
        assert_eq!(level_sizes(2), vec![1]);
        assert_eq!(level_sizes(128), vec![1]);
        assert_eq!(level_sizes(129), vec![2, 1]);
        assert_eq!(level_sizes(128 * 128), vec![128, 1]);
        assert_eq!(level_sizes(128 * 128 + 1), vec![129, 2, 1]);
        let salt = [1u8; 32];
        assert_eq!(tree(&data(128), &salt).unwrap().bytes.len(), BLOCK);
        let t = tree(&data(129), &salt).unwrap();
        // Top level (1 block) first, then level 0 (2 blocks).
        assert_eq!(t.bytes.len(), 3 * BLOCK);
        let level0 = &t.bytes[BLOCK..];
        let d = data(129);
        assert_eq!(level0[128 * 32..129 * 32], digest(&salt, &d[128 * BLOCK..]));
        assert!(level0[129 * 32..].iter().all(|b| *b == 0));
        assert_eq!(t.bytes[..32], digest(&salt, &level0[..BLOCK]));
        assert_eq!(t.bytes[32..64], digest(&salt, &level0[BLOCK..]));
        assert_eq!(t.root, digest(&salt, &t.bytes[..BLOCK]));
    }

    #[test]
    fn the_salt_changes_the_root_and_bad_lengths_are_errors() {
        let a = tree(&data(3), &[0u8; 32]).unwrap();
        let b = tree(&data(3), &[1u8; 32]).unwrap();
        assert_ne!(a.root, b.root);
        assert_eq!(tree(&[], &[0; 32]), Err(VerityError::BadLength { len: 0 }));
        assert_eq!(
            tree(&[0; 100], &[0; 32]),
            Err(VerityError::BadLength { len: 100 })
        );
    }
}
