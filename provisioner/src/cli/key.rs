//! `provisioner key init|show`: the config-signing key in the state
//! directory ([`crate::keys`]), without a daemon.

use std::path::Path;

use anyhow::Context as _;
use clap::Subcommand;

use crate::keys;

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Create the config-signing key (STATE/config-signing.key, mode 0600) and its
    /// public key (STATE/config-signing.pub) if missing, and print the .pub path.
    /// Idempotent: an existing key is kept (the daemon also creates it at its first
    /// start). Build host images that trust it with `provisioner image build host
    /// --trust-key STATE/config-signing.pub`.
    #[command(
        after_help = "Examples:\n  provisioner key init --state /var/lib/provisioner\n  provisioner image build host --agent node-agent --out out/host \\\n      --trust-key \"$(provisioner key init --state /var/lib/provisioner)\""
    )]
    Init,
    /// Print the public key (64 hex digits) of STATE/config-signing.key.
    Show,
}

pub(crate) fn run(command: KeyCommand, state: &Path) -> anyhow::Result<()> {
    match command {
        KeyCommand::Init => {
            let (_, created) = keys::ensure_signing_key(state)?;
            if created {
                eprintln!("created {}", state.join(keys::SIGNING_KEY_FILE).display());
            }
            println!("{}", keys::public_key_path(state).display());
        }
        KeyCommand::Show => {
            let path = state.join(keys::SIGNING_KEY_FILE);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read {}: create it with `provisioner key init --state {}`",
                    path.display(),
                    state.display()
                )
            })?;
            let key = model::deploy::parse_signing_key(&text)
                .with_context(|| format!("{} is not a config-signing key", path.display()))?;
            print!("{}", model::deploy::public_key_text(&key.verifying_key()));
        }
    }
    Ok(())
}
