//! Loads every model file in a folder, `REPEAT` times over, and prints the time per load: how
//! much of a fleet run goes to reading models.
//!
//!     cargo run --release -p fleetscore-models --example load_many -- DIR [REPEAT]

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: load_many DIR [REPEAT]");
    let repeat: usize = args
        .next()
        .map_or(3, |r| r.parse().expect("REPEAT is a number"));
    let files: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("readable folder")
        .map(|e| std::fs::read(e.expect("entry").path()).expect("readable file"))
        .collect();
    let started = Instant::now();
    let mut features = 0;
    for _ in 0..repeat {
        for f in &files {
            features += fleetscore_models::Model::from_bytes(f)
                .expect("loads")
                .n_features();
        }
    }
    let loads = files.len() * repeat;
    println!(
        "{loads} loads ({features} features) in {:.3}s: {:.1} µs each",
        started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64() * 1e6 / loads as f64
    );
}
