//! Records the build a counterexample comes from: the git commit, whether
//! the tree differed from it, and a hash of the model's source (so that a
//! patched model is told apart from the fixed one even without git).

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .map(|s| !s.is_empty())
        .unwrap_or(true);
    let mut files = Vec::new();
    rust_files(Path::new("src/model"), &mut files);
    files.sort();
    // FNV-1a over each file's path and contents.
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for f in &files {
        let bytes = f
            .to_string_lossy()
            .into_owned()
            .into_bytes()
            .into_iter()
            .chain(std::fs::read(f).unwrap_or_default());
        for b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    println!("cargo:rustc-env=MMHARNESS_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=MMHARNESS_GIT_DIRTY={dirty}");
    println!("cargo:rustc-env=MMHARNESS_MODEL_HASH={:012x}", h >> 16);
}
