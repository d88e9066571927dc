//! Replays the fuzz corpus (`fuzz/corpus/<target>/`, crashes found by fuzzing included)
//! through the same functions the cargo-fuzz targets call (`fuzz/targets.rs`), so every
//! input ever found interesting stays a regression test of the normal test command. No
//! servers needed.
#[path = "../fuzz/targets.rs"]
mod targets;

use std::path::PathBuf;

#[test]
fn every_corpus_file_passes_its_target() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut total = 0;
    for (name, target) in targets::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
            .map(|e| e.expect("entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "corpus {name} is empty");
        for file in &files {
            let data = std::fs::read(file).expect("read corpus file");
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} fails its target", file.display());
        }
        total += files.len();
    }
    eprintln!("replayed {total} corpus files over {} targets", targets::TARGETS.len());
}
