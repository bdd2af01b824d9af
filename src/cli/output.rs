//! Output paths, made and probed before any work: a command that cannot write its results says so at
//! once, not after a sweep of minutes.

use std::fs::{File, OpenOptions};
use std::path::Path;

use super::{CliError, CliResult};

/// Refuses `path` for `flag`: names the nearest existing ancestor that is a file rather than a directory
/// when there is one (the usual reason a directory cannot be made), else `error`.
fn refuse(flag: &str, path: &Path, doing: &str, error: std::io::Error) -> CliError {
    let blocking = path
        .ancestors()
        .skip(1)
        .find(|a| !a.as_os_str().is_empty() && a.exists())
        .filter(|a| !a.is_dir());
    match blocking {
        Some(file) => CliError::Rejected(format!(
            "{flag} {}: {} is a file, not a directory: choose another path",
            path.display(),
            file.display()
        )),
        None => CliError::Rejected(format!(
            "{flag} {}: cannot {doing}: {error}",
            path.display()
        )),
    }
}

/// Creates directory `dir` (and its parents) and checks that a file can be created in it, leaving
/// nothing behind but the directory.
///
/// # Errors
/// [`CliError::Rejected`] naming `flag`, the path and why.
pub fn prepare_dir(flag: &str, dir: &Path) -> CliResult<()> {
    std::fs::create_dir_all(dir).map_err(|e| refuse(flag, dir, "create the directory", e))?;
    let probe = dir.join(format!(".attn-write-probe-{}", std::process::id()));
    File::create(&probe).map_err(|e| refuse(flag, dir, "create a file in it", e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Creates the parent directory of `file` and checks that `file` can be written: an existing file is
/// opened for writing without being changed, a new one created and removed again.
///
/// # Errors
/// [`CliError::Rejected`] naming `flag`, the path and why.
pub fn prepare_file(flag: &str, file: &Path) -> CliResult<()> {
    if file.is_dir() {
        return Err(CliError::Rejected(format!(
            "{flag} {}: is a directory: give a file name",
            file.display()
        )));
    }
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| refuse(flag, file, "create its directory", e))?;
    }
    if file.exists() {
        OpenOptions::new()
            .write(true)
            .open(file)
            .map_err(|e| refuse(flag, file, "write it", e))?;
    } else {
        File::create(file).map_err(|e| refuse(flag, file, "create it", e))?;
        let _ = std::fs::remove_file(file);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_under_a_file_is_refused_with_the_file_named() {
        let dir = std::env::temp_dir().join(format!("attn-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("plain");
        std::fs::write(&file, "x").unwrap();
        let under = file.join("results");
        let error = prepare_dir("--out", &under).unwrap_err().to_string();
        assert!(error.contains("is a file, not a directory"), "{error}");
        let error = prepare_file("--out", &under.join("a.png"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("is a file, not a directory"), "{error}");
        // A new directory is made, a writable file left unchanged, a new file not left behind.
        prepare_dir("--out", &dir.join("new/deeper")).unwrap();
        assert!(dir.join("new/deeper").is_dir());
        prepare_file("--out", &file).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
        prepare_file("--out", &dir.join("made/picture.png")).unwrap();
        assert!(!dir.join("made/picture.png").exists() && dir.join("made").is_dir());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
