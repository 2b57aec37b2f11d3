//! Runs one target on files without libFuzzer, for a plain backtrace on stable:
//! `RUST_BACKTRACE=1 cargo run --example replay -- TARGET FILE...`

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(name) = args.next() else {
        eprintln!("usage: replay TARGET FILE...");
        std::process::exit(2);
    };
    let Some(f) = causeway_fuzz::target(&name) else {
        let names: Vec<_> = causeway_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("unknown target {name}; targets: {}", names.join(", "));
        std::process::exit(2);
    };
    for path in args {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        println!("{name} on {path} ({} bytes)", bytes.len());
        f(&bytes);
    }
    println!("no panic");
}
