//! `fleetscore train`, run as a user runs it: the reference fleet's models refitted on their
//! sensors' readings, compared with scikit-learn fitting the same rows (when
//! `FLEETSCORE_TEST_PYTHON` names a Python with scikit-learn).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{bin, tempdir};

fn reference(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/data/reference")
        .join(path)
}

fn fleet(store: &Path, args: &[&str]) -> Output {
    bin()
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("run fleetscore")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The current version of every model, by `device/tag`.
fn versions(store: &Path) -> Vec<(String, String)> {
    ok(&fleet(store, &["models", "list", "--json"]))
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                format!(
                    "{}/{}",
                    v["device"].as_str().unwrap(),
                    v["tag"].as_str().unwrap()
                ),
                v["version"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

const FROM: &str = "2018-08-28 23:00:00";
const TO: &str = "2018-08-29 02:00:00";

/// Loads each exported model in scikit-learn, fits scikit-learn's own estimator on the same
/// rows (the sensor's readings in the window, in time order, as the run reads them), and
/// compares their decision functions on all of the sensor's readings.
const COMPARE: &str = r#"
import json, pickle, sys, warnings
import joblib
import numpy as np, pandas as pd
from sklearn.ensemble import IsolationForest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM
warnings.simplefilter("error")
csv, cases = sys.argv[1], json.loads(sys.argv[2])
data = pd.read_csv(csv, parse_dates=["TS"])
worst = 0.0
for c in cases:
    d = data[(data.Device == int(c["device"])) & (data.Tag == int(c["tag"]))]
    d = d.sort_values(["TS", "Value"], kind="stable").drop_duplicates(["TS", "Value"])
    window = d[(d.TS >= pd.Timestamp(c["from"])) & (d.TS < pd.Timestamp(c["to"]))]
    X = window[["Value"]].to_numpy()
    if c["kind"] == "ocsvm":
        want = make_pipeline(StandardScaler(), OneClassSVM(nu=c["nu"])).fit(X)
    else:
        want = IsolationForest(random_state=c["seed"]).fit(X)
    if c.get("joblib"):
        got = joblib.load(c["file"])
    else:
        with open(c["file"], "rb") as f:
            got = pickle.load(f)
    assert type(got) is type(want), (type(got), type(want))
    all_rows = d[["Value"]].to_numpy()
    a, b = got.decision_function(all_rows), want.decision_function(all_rows)
    scale = np.maximum(np.abs(b), 1.0)
    worst = max(worst, float(np.max(np.abs(a - b) / scale)))
    assert (got.predict(all_rows) == want.predict(all_rows)).all(), c
    assert len(window) == c["rows"], (len(window), c)
print(f"{len(cases)} models equal scikit-learn's fits; worst relative difference {worst:.2e}")
assert worst <= 1e-9, worst
"#;

#[test]
fn train_refits_the_fleet_as_scikit_learn_fits_it() {
    let dir = tempdir("train-fleet");
    let store = dir.join("store");
    let s = store.as_path();
    ok(&fleet(
        s,
        &[
            "models",
            "import",
            reference("models").to_str().unwrap(),
            "--pattern",
            "model_{device}_{tag}",
        ],
    ));
    ok(&fleet(
        s,
        &[
            "data",
            "import",
            reference("sensor_data.csv").to_str().unwrap(),
        ],
    ));
    // Sensor 3/3's model saved with joblib's zlib compression: its successors keep it.
    let zlib_dir = dir.join("zlib");
    std::fs::create_dir_all(&zlib_dir).unwrap();
    {
        use std::io::Write;
        let plain = std::fs::read(reference("models/model_3_3")).unwrap();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(3));
        z.write_all(&plain).unwrap();
        std::fs::write(zlib_dir.join("model_3_3"), z.finish().unwrap()).unwrap();
    }
    ok(&fleet(
        s,
        &[
            "models",
            "import",
            zlib_dir.to_str().unwrap(),
            "--pattern",
            "model_{device}_{tag}",
        ],
    ));
    let before = versions(s);
    assert_eq!(before.len(), 15);

    // After a scoring run, --unhealthy picks the four models that flag every reading (as
    // `models health` does).
    ok(&fleet(
        s,
        &["run", "--from", FROM, "--to", TO, "--run-id", "before"],
    ));
    let unhealthy = ok(&fleet(
        s,
        &[
            "train",
            "--from",
            FROM,
            "--to",
            TO,
            "--estimator",
            "ocsvm",
            "--unhealthy",
            "--dry-run",
        ],
    ));
    assert!(
        unhealthy.contains("dry run: 4 models would be fitted"),
        "{unhealthy}"
    );

    // A dry run lists the 15 and fits nothing.
    let dry = ok(&fleet(
        s,
        &[
            "train",
            "--from",
            FROM,
            "--to",
            TO,
            "--estimator",
            "ocsvm",
            "--dry-run",
        ],
    ));
    assert!(dry.contains("dry run: 15 models would be fitted"), "{dry}");
    assert_eq!(versions(s), before);

    // Every model refitted as Pipeline(StandardScaler, OneClassSVM(nu=0.1)).
    let out = ok(&fleet(
        s,
        &[
            "train",
            "--from",
            FROM,
            "--to",
            TO,
            "--estimator",
            "ocsvm",
            "--nu",
            "0.1",
            "--workers",
            "2",
        ],
    ));
    assert!(out.contains("15 models fitted and made current"), "{out}");
    let after = versions(s);
    assert!(
        before
            .iter()
            .zip(&after)
            .all(|(a, b)| a.0 == b.0 && a.1 != b.1),
        "{before:?} {after:?}"
    );
    // The new version's metadata says how it was fitted.
    let shown = ok(&fleet(s, &["models", "show", "1/1"]));
    let meta: serde_json::Value =
        serde_json::from_str(shown.split("versions (oldest first)").next().unwrap()).unwrap();
    let training = &meta["training"];
    assert_eq!(training["params"]["nu"], 0.1, "{meta}");
    assert_eq!(
        training["params"]["estimator"],
        "Pipeline(StandardScaler, OneClassSVM)"
    );
    assert_eq!(training["from"], "2018-08-28T23:00:00.000Z");
    assert!(
        training["metrics"]["n_support"].as_f64().unwrap() > 0.0,
        "{meta}"
    );
    let rows_1_1 = training["rows"].as_u64().unwrap();
    assert!(rows_1_1 > 100, "{meta}");

    let zlib_file = dir.join("3_3.joblib");
    ok(&fleet(
        s,
        &[
            "models",
            "export",
            "3/3",
            "--output",
            zlib_file.to_str().unwrap(),
        ],
    ));
    assert_eq!(
        &std::fs::read(&zlib_file).unwrap()[..2],
        b"\x78\x5e",
        "zlib at level 3"
    );
    let inspected = ok(&bin()
        .args(["models", "inspect"])
        .arg(&zlib_file)
        .output()
        .unwrap());
    assert!(inspected.contains("(zlib), protocol 4"), "{inspected}");

    // The trained models score in a run like any other.
    let run = ok(&fleet(s, &["run", "--from", FROM, "--to", TO]));
    assert!(run.contains("15 models scored"), "{run}");

    // IsolationForest with a seed, on device 2's models only.
    let out = ok(&fleet(
        s,
        &[
            "train",
            "--from",
            FROM,
            "--to",
            TO,
            "--estimator",
            "iforest",
            "--random-state",
            "7",
            "--models",
            "2/*",
            "--run-id",
            "train-iforest",
        ],
    ));
    assert!(out.contains("5 models fitted"), "{out}");
    let now = versions(s);
    assert_eq!(
        now.iter().zip(&after).filter(|(a, b)| a.1 != b.1).count(),
        5,
        "{now:?}"
    );

    // --like current keeps each model's estimator and parameters: refitting on the same
    // window gives the same versions.
    let out = ok(&fleet(
        s,
        &[
            "train",
            "--from",
            FROM,
            "--to",
            TO,
            "--like",
            "current",
            "--run-id",
            "train-like",
        ],
    ));
    assert!(out.contains("15 models fitted"), "{out}");
    assert_eq!(versions(s), now);

    // Too few rows: every sensor skipped, with the reason in the task logs.
    let out = ok(&fleet(
        s,
        &[
            "train",
            "--from",
            FROM,
            "--to",
            TO,
            "--estimator",
            "ocsvm",
            "--min-rows",
            "100000",
            "--run-id",
            "train-few",
        ],
    ));
    assert!(out.contains("0 models fitted"), "{out}");
    assert!(out.contains("15 skipped"), "{out}");
    assert_eq!(versions(s), now);
    let logs: String = std::fs::read_dir(store.join("logs/run=train-few"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(logs.contains("fewer than the 100000 a fit needs"), "{logs}");

    // Planned with --detach, a training run is executed by `fleetscore worker` processes.
    let out = ok(&fleet(
        s,
        &[
            "train",
            "--from",
            FROM,
            "--to",
            TO,
            "--estimator",
            "ocsvm",
            "--nu",
            "0.3",
            "--models",
            "1/1",
            "--detach",
            "--run-id",
            "train-detached",
        ],
    ));
    assert!(out.contains("planned 1 models in 1 tasks"), "{out}");
    assert_eq!(versions(s), now);
    ok(&fleet(s, &["worker", "--threads", "1", "--idle-exit", "1"]));
    let detached = versions(s);
    assert_ne!(detached[0].1, now[0].1, "{detached:?}");
    assert_eq!(detached[1..], now[1..]);
    let shown = ok(&fleet(s, &["models", "show", "1/1"]));
    assert!(shown.contains("\"run\": \"train-detached\""), "{shown}");

    // A wrong parameter is refused before anything is planned.
    let bad = fleet(
        s,
        &[
            "train",
            "--from",
            FROM,
            "--to",
            TO,
            "--estimator",
            "ocsvm",
            "--nu",
            "1.5",
        ],
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("nu"),
        "{bad:?}"
    );

    // scikit-learn fits the same rows to the same models.
    let Ok(python) = std::env::var("FLEETSCORE_TEST_PYTHON") else {
        eprintln!("FLEETSCORE_TEST_PYTHON not set: trained models not compared with scikit-learn");
        return;
    };
    let mut cases = Vec::new();
    for (key, kind, nu) in [
        ("1/1", "ocsvm", 0.3),
        ("3/5", "ocsvm", 0.1),
        ("3/3", "ocsvm", 0.1),
        ("2/2", "iforest", 0.0),
        ("2/4", "iforest", 0.0),
    ] {
        let file = dir.join(format!("{}.pkl", key.replace('/', "_")));
        ok(&fleet(
            s,
            &["models", "export", key, "--output", file.to_str().unwrap()],
        ));
        let shown = ok(&fleet(s, &["models", "show", key]));
        let meta: serde_json::Value =
            serde_json::from_str(shown.split("versions (oldest first)").next().unwrap()).unwrap();
        let (device, tag) = key.split_once('/').unwrap();
        cases.push(serde_json::json!({
            "device": device, "tag": tag, "kind": kind, "nu": nu, "seed": 7,
            "from": "2018-08-28 23:00:00", "to": "2018-08-29 02:00:00",
            "rows": meta["training"]["rows"], "file": file, "joblib": key == "3/3",
        }));
    }
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(COMPARE)
        .arg(reference("sensor_data.csv"))
        .arg(serde_json::to_string(&cases).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}
