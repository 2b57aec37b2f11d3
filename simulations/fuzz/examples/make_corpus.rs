//! Writes the seed corpus: `cargo run --example make_corpus` (from simulations/fuzz) puts valid
//! encodings of every decoded message into `corpus/<target>/seed-<name>`.

use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut n = 0;
    for (target, name, bytes) in causeway_fuzz::seeds::all() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
        n += 1;
    }
    println!("wrote {n} seeds under {}", root.display());
}
