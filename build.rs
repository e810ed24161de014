//! Embeds every file under `web/` into the binary (served by `src/assets.rs`), so the release
//! binary is self-contained. Test and tooling files under `web/` are left out.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let root =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let web = root.join("web");
    println!("cargo:rerun-if-changed=web");
    let mut files = Vec::new();
    if web.is_dir() {
        collect(&web, &web, &mut files);
    }
    files.sort();
    let mut out = String::from("/// (URL path, bytes, ETag) of every embedded file.\npub static FILES: &[(&str, &[u8], &str)] = &[\n");
    for (url, path) in &files {
        let bytes = fs::read(path).expect("read web file");
        println!("cargo:rerun-if-changed={}", path.display());
        out.push_str(&format!(
            "    ({url:?}, include_bytes!({:?}), \"\\\"{:016x}\\\"\"),\n",
            path.display().to_string(),
            fnv1a(&bytes)
        ));
    }
    out.push_str("];\n");
    let dest =
        PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("web_assets.rs");
    fs::write(dest, out).expect("write web_assets.rs");
}

/// Files to embed: everything but tests, node tooling and dotfiles.
fn collect(base: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.')
            || name == "node_modules"
            || name == "test"
            || name.starts_with("package")
        {
            continue;
        }
        if path.is_dir() {
            collect(base, &path, out);
        } else if let Ok(rel) = path.strip_prefix(base) {
            let url = format!("/{}", rel.to_string_lossy().replace('\\', "/"));
            out.push((url, path));
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}
