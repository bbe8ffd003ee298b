//! The build-time tools of the host image (`mkfs.erofs`, `mkfs.ext4`, `mkfs.fat`, mtools,
//! `objcopy`): run one and turn "not installed" and "failed" into errors that name the
//! Debian package to install or the command and its stderr.

use std::process::{Command, ExitStatus, Output};

/// Why a build tool did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot run `{tool}`: install it (Debian package `{package}`, `cargo xtask deps`)")]
    Spawn {
        tool: &'static str,
        package: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
}

/// Runs `command` (the tool `tool` from Debian package `package`) to completion; its
/// output when it exits 0.
pub fn run(
    command: &mut Command,
    tool: &'static str,
    package: &'static str,
) -> Result<Output, ToolError> {
    let output = command.output().map_err(|source| ToolError::Spawn {
        tool,
        package,
        source,
    })?;
    if !output.status.success() {
        return Err(ToolError::Failed {
            command: format!("{command:?}").replace('"', ""),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output)
}
