//! numpy's legacy `RandomState` and scikit-learn's `sample_without_replacement`, replayed
//! against the draws numpy itself made (`random_state.json`, from gen_train_iforest.py).

use fleetscore_train::rng::{RandomState, sample_without_replacement};
use serde_json::Value as Json;

use crate::json;

fn ints(v: &Json) -> Vec<i64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_i64().expect("integer"))
        .collect()
}

fn floats(v: &Json) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

#[test]
fn random_state_draws_equal_numpys() {
    let goldens = json("iforest/random_state.json");
    let seeds = goldens["seeds"].as_array().expect("seeds");
    assert!(seeds.len() >= 5);
    let mut checked = 0;
    for case in seeds {
        let seed = case["seed"].as_u64().expect("seed") as u32;
        let mut rng = RandomState::new(seed);
        for (k, op) in case["ops"].as_array().expect("ops").iter().enumerate() {
            let name = op["op"].as_str().expect("op");
            let args = &op["args"];
            let at = format!("seed {seed}, op {k} ({name} {args})");
            match name {
                "random_sample" => {
                    let n = args["size"].as_u64().unwrap() as usize;
                    let got: Vec<f64> = (0..n).map(|_| rng.random_sample()).collect();
                    assert_eq!(got, floats(&op["out"]), "{at}");
                }
                "uniform" => {
                    let (lo, hi) = (
                        args["low"].as_f64().unwrap(),
                        args["high"].as_f64().unwrap(),
                    );
                    let n = args["size"].as_u64().unwrap() as usize;
                    let got: Vec<f64> = (0..n).map(|_| rng.uniform(lo, hi)).collect();
                    assert_eq!(got, floats(&op["out"]), "{at}");
                }
                "randint" => {
                    let (lo, hi) = (
                        args["low"].as_i64().unwrap(),
                        args["high"].as_i64().unwrap(),
                    );
                    let n = args["size"].as_u64().unwrap_or(1) as usize;
                    assert_eq!(rng.randint_n(lo, hi, n), ints(&op["out"]), "{at}");
                }
                "permutation" => {
                    let n = args["n"].as_u64().unwrap() as usize;
                    assert_eq!(rng.permutation(n), ints(&op["out"]), "{at}");
                }
                "sample_without_replacement" => {
                    let pop = args["n_population"].as_u64().unwrap() as usize;
                    let n = args["n_samples"].as_u64().unwrap() as usize;
                    let got = sample_without_replacement(&mut rng, pop, n);
                    assert_eq!(got, ints(&op["out"]), "{at}");
                }
                other => panic!("unknown op {other}"),
            }
            checked += 1;
        }
    }
    assert!(checked >= 100, "only {checked} operations");
}
