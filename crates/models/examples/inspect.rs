//! Prints what a model file holds and scores a few values: `cargo run --example inspect FILE`.
fn main() {
    let path = std::env::args().nth(1).expect("usage: inspect FILE");
    let bytes = std::fs::read(&path).expect("read");
    match fleetscore_models::Model::from_bytes(&bytes) {
        Ok(m) => {
            println!("{}", serde_json::to_string_pretty(m.info()).unwrap());
            let x: Vec<f64> = (0..5 * m.n_features()).map(|i| i as f64 * 0.7).collect();
            let mut d = vec![0.0; 5];
            let mut p = vec![0i8; 5];
            m.score(&x, &mut d, &mut p).unwrap();
            println!("{d:?} {p:?}");
        }
        Err(e) => println!("error: {e}"),
    }
}
