//! Holds the code to the layering `src/lib.rs` writes down: a module may name (`crate::...`) only modules of its
//! own layer or of layers listed above it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Each module's layer, in the order of the `//! - ` list in `lib.rs` (0 at the top).
fn layers() -> HashMap<String, usize> {
    let lib = std::fs::read_to_string(Path::new(SRC).join("lib.rs")).unwrap();
    let mut layers = HashMap::new();
    let mut layer = None;
    for line in lib.lines() {
        let Some(doc) = line.strip_prefix("//!") else { continue };
        if doc.starts_with(" - ") {
            layer = Some(layer.map_or(0, |l| l + 1));
        } else if !doc.starts_with("   ") {
            continue;
        }
        let Some(layer) = layer else { continue };
        for name in doc.split("[`").skip(1).filter_map(|rest| rest.split_once("`]")).map(|(name, _)| name) {
            layers.insert(name.to_owned(), layer);
        }
    }
    layers
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The modules a file names through `crate::` in code (comments left out).
fn named_modules(source: &str) -> Vec<String> {
    let code: String =
        source.lines().filter(|line| !line.trim_start().starts_with("//")).map(|line| format!("{line}\n")).collect();
    let mut names = Vec::new();
    for rest in code.split("crate::").skip(1) {
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            names.extend(group.split(',').map(|item| item.trim().split("::").next().unwrap_or("").to_owned()));
        } else {
            names.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    names.retain(|name| !name.is_empty());
    names
}

#[test]
fn lib_rs_places_every_module_in_a_layer() {
    let layers = layers();
    let lib = std::fs::read_to_string(Path::new(SRC).join("lib.rs")).unwrap();
    let declared: Vec<&str> = lib.lines().filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';')).collect();
    assert!(declared.len() > 10, "lib.rs declares its modules: {declared:?}");
    let unplaced: Vec<&&str> = declared.iter().filter(|m| !layers.contains_key(**m)).collect();
    assert!(unplaced.is_empty(), "modules lib.rs's layer list leaves out: {unplaced:?}");
}

#[test]
fn no_module_imports_a_layer_below_it() {
    let layers = layers();
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let mut against = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(SRC).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_str().unwrap();
        let module = first.strip_suffix(".rs").unwrap_or(first);
        let Some(&own) = layers.get(module) else { continue };
        let source = std::fs::read_to_string(file).unwrap();
        for named in named_modules(&source) {
            if layers.get(&named).is_some_and(|&layer| layer > own) {
                against.push(format!("{} names crate::{named}", relative.display()));
            }
        }
    }
    assert!(files.len() > 50, "the sources were found");
    against.sort();
    against.dedup();
    assert!(against.is_empty(), "imports against the layering in src/lib.rs:\n{}", against.join("\n"));
}

#[test]
fn the_scan_sees_single_and_grouped_imports() {
    let source = "use crate::domain::user::UserId;\n// crate::http in a comment\nuse crate::{metrics, sync};\n";
    assert_eq!(named_modules(source), ["domain", "metrics", "sync"]);
}
