//! Where an upgrade's files come from: a directory on a local disk or an
//! `http://` URL base. `--image` names the manifest (a file or URL; a
//! directory or a URL ending in `/` means its `manifest.json`), and the files
//! the manifest names are resolved next to it.
//!
//! Invariants: only plain file names are resolved (no `/`, no `..`), so a
//! manifest cannot point outside its directory; files are opened as streams,
//! never read whole here; plain HTTP only (the agent has no TLS).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::UpgradeError;

/// The manifest's name when `--image` names a directory.
pub const MANIFEST: &str = "manifest.json";

/// An upgrade source: where the manifest and its files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    base: Base,
    manifest: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Base {
    /// A local directory.
    Dir(PathBuf),
    /// `http://host[:port]/path/`, ending with `/`.
    Http(String),
}

impl Source {
    /// Parses `--image`: `http://HOST[:PORT]/PATH/manifest.json`,
    /// `http://HOST/PATH/` (its `manifest.json`), a manifest file, or a
    /// directory holding `manifest.json`.
    pub fn parse(image: &str) -> Result<Source, UpgradeError> {
        let bad = |why: &str| UpgradeError::BadSource {
            image: image.to_owned(),
            why: why.to_owned(),
        };
        if let Some(rest) = image.strip_prefix("http://") {
            let Some(slash) = rest.find('/') else {
                return Ok(Source {
                    base: Base::Http(format!("{image}/")),
                    manifest: MANIFEST.to_owned(),
                });
            };
            if slash == 0 {
                return Err(bad("the URL has no host"));
            }
            let (dir, name) = image.rsplit_once('/').expect("the URL has a '/'");
            let name = if name.is_empty() { MANIFEST } else { name };
            return Ok(Source {
                base: Base::Http(format!("{dir}/")),
                manifest: name.to_owned(),
            });
        }
        if image.contains("://") {
            return Err(bad(
                "only http:// URLs are supported (the agent has no TLS): serve the files over \
                 plain HTTP on the provisioning network, or put them on a local disk and give \
                 the path",
            ));
        }
        let path = Path::new(image);
        if path.is_dir() {
            return Ok(Source {
                base: Base::Dir(path.to_owned()),
                manifest: MANIFEST.to_owned(),
            });
        }
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(bad("give the path of manifest.json or of its directory"));
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        Ok(Source {
            base: Base::Dir(dir.to_owned()),
            manifest: name.to_string_lossy().into_owned(),
        })
    }

    /// The manifest's file name.
    pub fn manifest(&self) -> &str {
        &self.manifest
    }

    /// Where file `name` is: a path or a URL, for messages and for [`Self::open`].
    pub fn location(&self, name: &str) -> String {
        match &self.base {
            Base::Dir(dir) => dir.join(name).display().to_string(),
            Base::Http(base) => format!("{base}{name}"),
        }
    }

    /// Opens file `name` (a plain file name from the manifest) as a stream.
    pub fn open(&self, name: &str) -> Result<Box<dyn Read>, UpgradeError> {
        check_name(name)?;
        let location = self.location(name);
        match &self.base {
            Base::Dir(dir) => {
                let path = dir.join(name);
                let file = std::fs::File::open(&path).map_err(|source| UpgradeError::Io {
                    what: "cannot open the upgrade file",
                    path,
                    source,
                })?;
                Ok(Box::new(file))
            }
            Base::Http(_) => {
                let http = ureq::Agent::new_with_config(
                    ureq::Agent::config_builder()
                        .timeout_connect(Some(Duration::from_secs(15)))
                        .timeout_recv_response(Some(Duration::from_secs(60)))
                        .http_status_as_error(false)
                        .build(),
                );
                let response =
                    http.get(&location)
                        .call()
                        .map_err(|source| UpgradeError::Fetch {
                            url: location.clone(),
                            source: Box::new(source),
                        })?;
                let status = response.status().as_u16();
                if status != 200 {
                    return Err(UpgradeError::HttpStatus {
                        url: location,
                        status,
                    });
                }
                Ok(Box::new(response.into_body().into_reader()))
            }
        }
    }
}

/// A manifest's file name must be a plain name in the manifest's directory.
fn check_name(name: &str) -> Result<(), UpgradeError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\']) {
        return Err(UpgradeError::Manifest {
            why: format!(
                "file name {name:?} is not a plain file name; the manifest's files must sit \
                 next to it"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths_resolve_next_to_the_manifest() {
        let s = Source::parse("http://10.0.0.1:8080/images/2/manifest.json").unwrap();
        assert_eq!(s.manifest(), "manifest.json");
        assert_eq!(
            s.location("root.img"),
            "http://10.0.0.1:8080/images/2/root.img"
        );
        let s = Source::parse("http://10.0.0.1:8080/images/2/").unwrap();
        assert_eq!(
            s.location(s.manifest()),
            "http://10.0.0.1:8080/images/2/manifest.json"
        );
        let s = Source::parse("http://host").unwrap();
        assert_eq!(s.location("uki.efi"), "http://host/uki.efi");
        let s = Source::parse("/mnt/img/v2.json").unwrap();
        assert_eq!(
            (s.manifest(), s.location("root.img").as_str()),
            ("v2.json", "/mnt/img/root.img")
        );
        let s = Source::parse("m.json").unwrap();
        assert_eq!(s.location("uki.efi"), "./uki.efi");
        let dir = tempfile::tempdir().unwrap();
        let s = Source::parse(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(
            s.location(s.manifest()),
            dir.path().join("manifest.json").display().to_string()
        );
    }

    #[test]
    fn refuses_tls_other_schemes_and_names_outside_the_directory() {
        for image in ["https://host/m.json", "ftp://host/m.json", "http:///m.json"] {
            let err = Source::parse(image).unwrap_err().to_string();
            assert!(err.contains(image), "{err}");
        }
        let s = Source::parse("/mnt/img/manifest.json").unwrap();
        for name in ["../etc/shadow", "a/b", "", ".."] {
            assert!(
                matches!(s.open(name), Err(UpgradeError::Manifest { .. })),
                "{name}"
            );
        }
    }
}
