//! The repository stands on its own: every Markdown file that code, scripts, tests or docs cite
//! (`docs/ARCHITECTURE.md`, `boards/README.md`, `BRAMBLE-PATCH.md`, ...) exists in the
//! repository. Walks the tracked source folders, finds every `*.md` name in their text, and
//! fails naming each citation that resolves to no file, and the file citing it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Folders and files whose text is checked (relative to the repository root). `vendor/` is
/// upstream's text and `target/` is build output, so neither is read.
const CHECKED: &[&str] = &[
    "src",
    "tests",
    "scripts",
    "docs",
    "boards",
    "systemd",
    "packaging",
    ".ci",
    ".cargo",
    "README.md",
    "Cargo.toml",
    "Cross.toml",
];
const TEXT_EXTENSIONS: &[&str] = &["rs", "py", "sh", "md", "toml", "service", "txt", "ini", ""];

fn files_under(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for entry in entries {
            let name = entry.file_name().unwrap().to_string_lossy().to_string();
            if name == "__pycache__" || name == ".venv" {
                continue;
            }
            files_under(&entry, out);
        }
    } else {
        let ext = path.extension().map(|e| e.to_string_lossy().to_string());
        if TEXT_EXTENSIONS.contains(&ext.as_deref().unwrap_or("")) {
            out.push(path.to_path_buf());
        }
    }
}

/// Every `name.md` or `dir/name.md` token in `text` (letters, digits, `_`, `-`, `.`, `/`).
fn md_citations(text: &str) -> Vec<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || "_-./".contains(c);
    let mut found = Vec::new();
    for (i, _) in text.match_indices(".md") {
        let after = text[i + 3..].chars().next();
        if after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let start = text[..i]
            .char_indices()
            .rev()
            .take_while(|&(_, c)| is_name(c))
            .last()
            .map_or(i, |(j, _)| j);
        let token = text[start..i + 3].trim_start_matches(['.', '/']);
        if token.len() > 3 {
            found.push(token.to_string());
        }
    }
    found
}

#[test]
fn every_cited_markdown_file_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all_md = BTreeSet::new();
    let mut md_files = Vec::new();
    for dir in ["", "docs", "boards", "vendor/kafka-protocol"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                md_files.push(path);
            }
        }
    }
    for path in &md_files {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .to_string();
        all_md.insert(rel);
    }
    assert!(
        all_md.contains("docs/ARCHITECTURE.md") && all_md.contains("docs/CONVENTIONS.md"),
        "the repository's own design docs are missing: {all_md:?}"
    );

    let mut files = Vec::new();
    for entry in CHECKED {
        files_under(&root.join(entry), &mut files);
    }
    let mut missing = Vec::new();
    // This file quotes made-up citations in its scanner's own test.
    let this_file = root.join(file!());
    for file in files.iter().filter(|f| **f != this_file) {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for cited in md_citations(&text) {
            // A path resolves from the root; a bare name may be any of the repository's docs.
            let resolves = all_md.contains(&cited)
                || all_md
                    .iter()
                    .any(|md| md.rsplit('/').next() == Some(cited.as_str()))
                || all_md.iter().any(|md| md.ends_with(&format!("/{cited}")));
            if !resolves {
                missing.push(format!(
                    "{} cites {cited}",
                    file.strip_prefix(root).unwrap().display()
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "cited Markdown files not in the repository:\n{}",
        missing.join("\n")
    );
}

#[test]
fn citation_scanner_finds_names() {
    let text = "see docs/ARCHITECTURE.md, (STYLE.md rule 7) and ../shared/DESIGN.md; not .mdx";
    assert_eq!(
        md_citations(text),
        ["docs/ARCHITECTURE.md", "STYLE.md", "shared/DESIGN.md"]
    );
}
