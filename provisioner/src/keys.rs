//! The state directory and the config-signing key in it.
//!
//! `STATE/config-signing.key` is the Ed25519 seed (64 hex digits,
//! [`model::deploy::signing_key_text`], mode 0600) that seals each node's
//! config at deploy ([`model::deploy::seal`]); `STATE/config-signing.pub` is
//! its public key ([`model::deploy::public_key_text`]), which the host image
//! carries (`provisioner image build host --trust-key STATE/config-signing.pub`)
//! to open the config. The daemon creates both at its first start; `provisioner
//! key init` creates them without a daemon.
//!
//! Invariants: the state directory is created mode 0700; the private key is
//! written once (`create_new`, mode 0600, fsynced) and never replaced: a new
//! key would make every installed host refuse its config; a key file readable
//! by others is set back to 0600 with a warning.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ed25519_dalek::SigningKey;
use tracing::{info, warn};

/// The private key file inside the state directory (mode 0600).
pub const SIGNING_KEY_FILE: &str = "config-signing.key";
/// Its public key, for `provisioner image build host --trust-key`.
pub const PUBLIC_KEY_FILE: &str = "config-signing.pub";

/// Creates the state directory (and its parents) mode 0700 when missing.
pub fn create_state_dir(state: &Path) -> anyhow::Result<()> {
    if state.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state)
        .with_context(|| {
            format!(
                "cannot create the state directory {}: check the parent's permissions or pass \
                 another --state",
                state.display()
            )
        })
}

/// The signing key of `state`, created (with its `.pub`) when missing; the
/// second value says whether it was created now. The `.pub` is rewritten
/// from the key when missing or different.
pub fn ensure_signing_key(state: &Path) -> anyhow::Result<(SigningKey, bool)> {
    create_state_dir(state)?;
    let path = state.join(SIGNING_KEY_FILE);
    let (key, created) = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mode = std::fs::metadata(&path)?.permissions().mode();
            if mode & 0o077 != 0 {
                warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "config-signing key was readable by others; setting mode 0600");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
            let key = model::deploy::parse_signing_key(&text).with_context(|| {
                format!(
                    "{} is not a config-signing key; restore it from a backup (a new key makes \
                     every deployed host refuse its config until redeployed)",
                    path.display()
                )
            })?;
            (key, false)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let seed: [u8; 32] = rand::random();
            let key = SigningKey::from_bytes(&seed);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| {
                    format!("cannot create the config-signing key {}", path.display())
                })?;
            file.write_all(model::deploy::signing_key_text(&key).as_bytes())?;
            file.sync_all()?;
            info!(path = %path.display(), "created a new config-signing key");
            (key, true)
        }
        Err(err) => {
            return Err(err)
                .with_context(|| format!("cannot read the config-signing key {}", path.display()));
        }
    };
    let public = public_key_path(state);
    let text = model::deploy::public_key_text(&key.verifying_key());
    if std::fs::read_to_string(&public).ok().as_deref() != Some(text.as_str()) {
        let partial = state.join(format!("{PUBLIC_KEY_FILE}.partial"));
        std::fs::write(&partial, &text)
            .and_then(|()| std::fs::rename(&partial, &public))
            .with_context(|| format!("cannot write {}", public.display()))?;
    }
    Ok((key, created))
}

/// Where the public key of `state` is.
pub fn public_key_path(state: &Path) -> PathBuf {
    state.join(PUBLIC_KEY_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_private_and_its_pub_matches() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/state");
        let (key, created) = ensure_signing_key(&state).unwrap();
        assert!(created);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(SIGNING_KEY_FILE)), 0o600);
        let public = std::fs::read_to_string(public_key_path(&state)).unwrap();
        assert_eq!(
            model::deploy::parse_public_key(&public).unwrap(),
            key.verifying_key()
        );
        // Again: the same key, nothing created; a lost .pub comes back.
        std::fs::remove_file(public_key_path(&state)).unwrap();
        let (again, created) = ensure_signing_key(&state).unwrap();
        assert!(!created);
        assert_eq!(again.as_bytes(), key.as_bytes());
        assert_eq!(
            std::fs::read_to_string(public_key_path(&state)).unwrap(),
            public
        );
        // A damaged key is an error naming the file, never replaced.
        std::fs::write(state.join(SIGNING_KEY_FILE), "zz\n").unwrap();
        let err = ensure_signing_key(&state).unwrap_err();
        assert!(format!("{err:#}").contains(SIGNING_KEY_FILE), "{err:#}");
    }
}
