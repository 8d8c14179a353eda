//! The `fleetscore models` command line, run as a user runs it: real files in, real files out,
//! exit codes and one-line errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fleetscore_table::RowPosition;

mod common;

use common::{bin, tempdir};

fn models_data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/data")
        .join(path)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run fleetscore")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `(TS, Device, Tag, Value) -> (score, prediction)` from scikit-learn's goldens.
fn reference_expected() -> Vec<Vec<String>> {
    std::fs::read_to_string(models_data("reference/expected.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

fn score_reference_model(out: &Path) -> Output {
    run(&[
        "models",
        "score",
        models_data("reference/models/model_2_3").to_str().unwrap(),
        "--input",
        models_data("reference/sensor_data.csv").to_str().unwrap(),
        "--features",
        "Value",
        "--where",
        "Device=2",
        "--where",
        "Tag=3",
        "--output",
        out.to_str().unwrap(),
    ])
}

#[test]
fn scoring_a_reference_model_writes_scikit_learns_predictions() {
    let dir = tempdir("reference");
    let out = dir.join("model_2_3.csv");
    let o = score_reference_model(&out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("scored"), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("TS,Device,Tag,Value,score,anomaly"));
    let got: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let want: Vec<Vec<String>> = reference_expected()
        .into_iter()
        .filter(|r| r[1] == "2" && r[2] == "3")
        .collect();
    assert_eq!(got.len(), want.len());
    assert!(got.len() > 1000);
    for (g, w) in got.iter().zip(&want) {
        // Input columns pass through to the character.
        assert_eq!(g[..4], [w[0].as_str(), &w[1], &w[2], &w[3]]);
        let (gs, ws): (f64, f64) = (g[4].parse().unwrap(), w[4].parse().unwrap());
        assert!(
            gs == ws || (gs - ws).abs() <= 1e-9 * ws.abs(),
            "{gs} vs {ws}"
        );
        let anomaly = if w[5] == "-1" { "1" } else { "0" };
        assert_eq!(g[5], anomaly);
    }
}

#[test]
fn csv_to_parquet_and_back_keeps_rows_and_scores() {
    let dir = tempdir("parquet");
    let csv = dir.join("a.csv");
    let parquet = dir.join("a.parquet");
    assert!(score_reference_model(&csv).status.success());
    assert!(score_reference_model(&parquet).status.success());
    // Read the Parquet back with the table crate's reader and compare with the CSV.
    let mut reader = fleetscore_table::open(&parquet, 100_000).unwrap();
    let schema = reader.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["TS", "Device", "Tag", "Value", "score", "anomaly"]);
    let batch = reader.next().unwrap().unwrap();
    let mut scores = Vec::new();
    fleetscore_table::feature_matrix(
        &batch,
        &["score".to_string(), "anomaly".to_string()],
        RowPosition::Row(0),
        &mut scores,
    )
    .unwrap();
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), batch.num_rows());
    for (i, row) in rows.iter().enumerate() {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(f[4].parse::<f64>().unwrap(), scores[2 * i]);
        assert_eq!(f[5].parse::<f64>().unwrap(), scores[2 * i + 1]);
    }
    // Parquet in: re-scoring the output would repeat its score and anomaly columns.
    let again = dir.join("b.csv");
    let o = run(&[
        "models",
        "score",
        models_data("reference/models/model_2_3").to_str().unwrap(),
        "-i",
        parquet.to_str().unwrap(),
        "-f",
        "Value",
        "-o",
        again.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("already has a column `score`"),
        "{}",
        stderr(&o)
    );
    assert!(!again.exists());
}

#[test]
fn parquet_output_reads_back_in_pyarrow_and_pandas() {
    // Runs where the test script provides a Python with pyarrow and pandas (CI does).
    let Ok(python) = std::env::var("FLEETSCORE_TEST_PYTHON") else {
        eprintln!("FLEETSCORE_TEST_PYTHON not set: pyarrow read-back not checked");
        return;
    };
    let dir = tempdir("pyarrow");
    let parquet = dir.join("out.parquet");
    assert!(score_reference_model(&parquet).status.success());
    let script = r#"
import sys, pyarrow.parquet as pq, pandas as pd
t = pq.read_table(sys.argv[1])
assert t.column_names == ["TS", "Device", "Tag", "Value", "score", "anomaly"], t.column_names
assert str(t.schema.field("score").type) == "double"
df = pd.read_parquet(sys.argv[1])
exp = pd.read_csv(sys.argv[2])
exp = exp[(exp.Device == 2) & (exp.Tag == 3)].reset_index(drop=True)
assert len(df) == len(exp), (len(df), len(exp))
rel = ((df.score - exp.score).abs() / exp.score.abs()).max()
assert rel <= 1e-9, rel
assert ((df.anomaly == 1) == (exp.prediction == -1)).all()
print("ok", len(df))
"#;
    let o = Command::new(python)
        .args([
            "-c",
            script,
            parquet.to_str().unwrap(),
            models_data("reference/expected.csv").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
}

#[test]
fn feature_names_stored_in_the_model_are_the_default_columns() {
    let dir = tempdir("names");
    let golden: serde_json::Value = serde_json::from_slice(
        &std::fs::read(models_data("sklearn-current/scaler_ocsvm_rbf.json")).unwrap(),
    )
    .unwrap();
    let mut csv = String::from("id,temp,pressure,vibration\n");
    for (i, row) in golden["X"].as_array().unwrap().iter().enumerate() {
        let v: Vec<String> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap().to_string())
            .collect();
        csv.push_str(&format!("{i},{}\n", v.join(",")));
    }
    let input = dir.join("in.csv");
    std::fs::write(&input, csv).unwrap();
    let out = dir.join("out.csv");
    let o = run(&[
        "models",
        "score",
        models_data("sklearn-current/scaler_ocsvm_rbf.lz4.joblib")
            .to_str()
            .unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want: Vec<f64> = golden["decision_function"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let text = std::fs::read_to_string(&out).unwrap();
    let got: Vec<f64> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(4).unwrap().parse().unwrap())
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-9 * w.abs(), "{g} vs {w}");
    }
}

#[test]
fn inspect_json_has_the_contract_fields() {
    let o = run(&[
        "models",
        "inspect",
        models_data("sklearn-legacy/iforest_contam.xz.joblib")
            .to_str()
            .unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], "joblib (xz), protocol 4");
    assert_eq!(v["estimator"], "IsolationForest");
    assert_eq!(v["n_features"], 4);
    assert_eq!(v["sklearn_version"], "1.1.3");
    assert_eq!(v["steps"][0]["params"]["n_estimators"], 20);
    let o = run(&[
        "models",
        "inspect",
        models_data("reference/models/model_3_5").to_str().unwrap(),
    ]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("estimator:    Pipeline(StandardScaler, OneClassSVM)"),
        "{text}"
    );
    assert!(text.contains("scikit-learn: 0.19.2"), "{text}");
}

#[test]
fn hostile_model_is_refused_with_one_line_and_no_output() {
    let dir = tempdir("hostile");
    let out = dir.join("out.csv");
    let marker = Path::new("/tmp/fleetscore-hostile-nested_in_pipeline_p4");
    let _ = std::fs::remove_file(marker);
    let hostile = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../pickle/tests/data/hostile/nested_in_pipeline_p4.pkl");
    let o = run(&[
        "models",
        "score",
        hostile.to_str().unwrap(),
        "--input",
        models_data("reference/sensor_data.csv").to_str().unwrap(),
        "--features",
        "Value",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: cannot load model "), "{err}");
    assert!(
        err.contains("refused global `posix.system` at byte"),
        "{err}"
    );
    assert!(!out.exists());
    assert!(!marker.exists());
}

#[test]
fn bad_input_is_reported_with_its_line_and_column() {
    let dir = tempdir("badinput");
    let input = dir.join("in.csv");
    std::fs::write(&input, "TS,Value\n1,10.5\n2,11.0\n3,oops\n").unwrap();
    let model = models_data("reference/models/model_1_1");
    let o = run(&[
        "models",
        "score",
        model.to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
        "-f",
        "Value",
        "-o",
        dir.join("o.csv").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("line 4, column `Value`: \"oops\" is not a number"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.join("o.csv").exists());

    let o = run(&[
        "models",
        "score",
        model.to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
        "-f",
        "Reading",
        "-o",
        dir.join("o.csv").to_str().unwrap(),
    ]);
    assert!(
        stderr(&o).contains("no column `Reading` (the table has: TS, Value)"),
        "{}",
        stderr(&o)
    );

    let o = run(&[
        "models",
        "score",
        model.to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
        "-f",
        "TS,Value",
        "-o",
        dir.join("o.csv").to_str().unwrap(),
    ]);
    assert!(
        stderr(&o).contains("the model expects 1 features, --features names 2 (TS,Value)"),
        "{}",
        stderr(&o)
    );

    std::fs::write(&input, "TS,Value\n1,10.5\n2,inf\n").unwrap();
    let o = run(&[
        "models",
        "score",
        model.to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
        "-f",
        "Value",
        "-o",
        dir.join("o.csv").to_str().unwrap(),
    ]);
    assert!(
        stderr(&o).contains("line 3, column `Value`: \"inf\" is not a finite number"),
        "{}",
        stderr(&o)
    );

    let broken = dir.join("broken.parquet");
    std::fs::write(&broken, b"PAR1 this is not parquet").unwrap();
    let o = run(&[
        "models",
        "score",
        model.to_str().unwrap(),
        "-i",
        broken.to_str().unwrap(),
        "-f",
        "Value",
        "-o",
        dir.join("o.csv").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not a readable Parquet file"),
        "{}",
        stderr(&o)
    );
}

/// `fleetscore --store DIR ...`
fn fleet(store: &Path, args: &[&str]) -> Output {
    bin()
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("run fleetscore")
}

#[test]
fn the_reference_job_from_the_command_line_equals_scikit_learn() {
    let dir = tempdir("fleet");
    let store = dir.join("store");
    let models = models_data("reference/models");
    let o = fleet(
        &store,
        &[
            "models",
            "import",
            models.to_str().unwrap(),
            "--pattern",
            "model_{device}_{tag}",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("15 imported, 0 unchanged, 0 refused"),
        "{}",
        stderr(&o)
    );
    let o = fleet(&store, &["models", "import", models.to_str().unwrap()]);
    assert!(
        stderr(&o).contains("0 imported, 15 unchanged"),
        "{}",
        stderr(&o)
    );
    let list = String::from_utf8(fleet(&store, &["models", "list"]).stdout).unwrap();
    assert_eq!(list.lines().count(), 15);
    assert!(list.starts_with("1/1\t"), "{list}");
    let show = String::from_utf8(fleet(&store, &["models", "show", "2/3"]).stdout).unwrap();
    assert!(
        show.contains("\"estimator\": \"Pipeline(StandardScaler, OneClassSVM)\""),
        "{show}"
    );
    assert!(show.contains("versions (oldest first):\n* "), "{show}");
    let o = fleet(&store, &["models", "show", "9/9"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no model for device \"9\" tag \"9\""),
        "{}",
        stderr(&o)
    );

    let data = models_data("reference/sensor_data.csv");
    let o = fleet(&store, &["data", "import", data.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("imported 17768 readings of 15 sensors"),
        "{}",
        stderr(&o)
    );

    let o = fleet(
        &store,
        &[
            "run",
            "--from",
            "2018-08-28T00:00:00Z",
            "--to",
            "2018-08-30 00:00:00",
            "--run-id",
            "ref",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains("run ref: succeeded — 15 models scored"),
        "{out}"
    );
    assert!(out.contains("17768 rows"), "{out}");

    let runs = String::from_utf8(fleet(&store, &["runs", "list"]).stdout).unwrap();
    assert!(runs.starts_with("ref\tsucceeded\t"), "{runs}");
    let show = String::from_utf8(fleet(&store, &["runs", "show", "ref"]).stdout).unwrap();
    assert!(
        show.contains("models      15 scored, 0 without data, 0 failed (of 15)"),
        "{show}"
    );
    assert!(show.contains("done"), "{show}");

    let export = dir.join("export");
    let o = fleet(
        &store,
        &[
            "predictions",
            "export",
            "--run",
            "ref",
            "--format",
            "csv",
            "--output",
            export.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut got = std::collections::HashMap::new();
    for entry in std::fs::read_dir(&export).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("TS,Device,Tag,Val,Prediction"));
        for l in lines {
            let f: Vec<&str> = l.split(',').collect();
            got.insert(
                (f[0].to_string(), f[1].to_string(), f[2].to_string()),
                (f[3].to_string(), f[4].to_string()),
            );
        }
    }
    let want = reference_expected();
    assert_eq!(got.len(), want.len());
    for w in &want {
        let (val, pred) = &got[&(w[0].clone(), w[1].clone(), w[2].clone())];
        assert_eq!(val.parse::<f64>().unwrap(), w[3].parse::<f64>().unwrap());
        // As pandas writes a float: a value read as 108 is written 108.0.
        assert!(val.contains('.') || val.contains('e'), "{val}");
        assert_eq!(pred, if w[5] == "-1" { "1" } else { "0" }, "{w:?}");
    }

    if let Ok(python) = std::env::var("FLEETSCORE_TEST_PYTHON") {
        // Each file is byte for byte what pandas writes for the same table, as the reference
        // pipeline's to_csv did: its files and ours diff clean.
        let script = r#"
import glob, os, sys, pandas as pd
for path in glob.glob(os.path.join(sys.argv[1], "predictions_*.csv")):
    text = open(path).read()
    df = pd.read_csv(path, dtype={"TS": str})
    again = df.to_csv(index=False)
    assert again == text, (path, again[:300], text[:300])
"#;
        let o = Command::new(&python)
            .args(["-c", script, export.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }

    let o = fleet(
        &store,
        &[
            "predictions",
            "export",
            "--run",
            "ref",
            "--format",
            "parquet",
            "--output",
            export.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    if let Ok(python) = std::env::var("FLEETSCORE_TEST_PYTHON") {
        let script = r#"
import sys, pandas as pd
df = pd.read_parquet(sys.argv[1])
assert list(df.columns) == ["device", "tag", "ts", "window_start", "window_end", "value", "score", "anomaly", "model_version", "run_id"], list(df.columns)
assert len(df) == 17768, len(df)
assert str(df.ts.dtype) == "datetime64[ms, UTC]", df.ts.dtype
assert (df.run_id == "ref").all()
print(int(df.anomaly.sum()))
"#;
        let o = Command::new(python)
            .args([
                "-c",
                script,
                export.join("predictions_ref.parquet").to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let anomalies: usize = String::from_utf8(o.stdout).unwrap().trim().parse().unwrap();
        assert_eq!(anomalies, want.iter().filter(|w| w[5] == "-1").count());
    }
}

#[test]
fn fleet_commands_refuse_bad_input_clearly() {
    let dir = tempdir("fleet-bad");
    let store = dir.join("store");
    let hostile = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../pickle/tests/data/hostile/subprocess_popen_p5.pkl");
    let o = fleet(
        &store,
        &[
            "models",
            "import",
            hostile.to_str().unwrap(),
            "--device",
            "d",
            "--tag",
            "t",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("refused global `subprocess.Popen`"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("0 imported, 0 unchanged, 1 refused"),
        "{}",
        stderr(&o)
    );

    let bad = dir.join("readings.csv");
    std::fs::write(
        &bad,
        "TS,Device,Tag,Value\n2018-08-28 23:00:05,1,1,3.5\nnot a time,1,1,4.0\n",
    )
    .unwrap();
    let o = fleet(&store, &["data", "import", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("line 3, column `TS`: \"not a time\" is not a time"),
        "{}",
        stderr(&o)
    );

    // A model of three features needs three reading columns named; fed one that readings do
    // not have, it fails alone in the run, which exits 2.
    let three = models_data("sklearn-current/ocsvm_linear.p4.pkl");
    let one = models_data("reference/models/model_1_2");
    let import_three = |extra: &[&str]| {
        let mut args = vec![
            "models",
            "import",
            three.to_str().unwrap(),
            "--device",
            "1",
            "--tag",
            "1",
        ];
        args.extend_from_slice(extra);
        fleet(&store, &args)
    };
    let o = import_three(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(
            "the model takes 3 features but is fed 1 reading column (value); name them with --features"
        ),
        "{}",
        stderr(&o)
    );
    // Raw readings and window statistics do not mix; statistics alone are fine.
    let o = import_three(&["--features", "value,mean,max"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("features value,mean,max mix raw readings and windows"),
        "{}",
        stderr(&o)
    );
    let o = import_three(&["--features", "mean,min,max"]);
    assert!(o.status.success(), "{}", stderr(&o));
    fleet(
        &store,
        &[
            "models",
            "import",
            one.to_str().unwrap(),
            "--device",
            "1",
            "--tag",
            "2",
        ],
    );
    let data = models_data("reference/sensor_data.csv");
    assert!(
        fleet(&store, &["data", "import", data.to_str().unwrap()])
            .status
            .success()
    );
    let o = fleet(
        &store,
        &["run", "--from", "2018-08-28", "--to", "2018-08-30"],
    );
    // The store has readings but no windows: the model fed windows has no data, which is not
    // a failure.
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("1 models scored, 1 without data, 0 failed"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    let o = fleet(&store, &["run", "--from", "tomorrow", "--to", "2018-08-30"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--from \"tomorrow\" is not a time"),
        "{}",
        stderr(&o)
    );
}

/// Run ids are one safe path segment: `p/q` would have put its outputs inside run `p`'s
/// folders, and re-planning `p` deleted them while `p/q`'s record still said succeeded. A
/// window is bounded, so a mistyped `--from` cannot make planning list millennia of hours.
#[test]
fn run_ids_and_windows_are_checked_before_anything_is_planned() {
    let store = tempdir("run-checks");
    let store = store.to_str().unwrap();
    for (args, want) in [
        (
            vec![
                "run",
                "--from",
                "2018-08-28",
                "--to",
                "2018-08-30",
                "--run-id",
                "p/q",
            ],
            "run id \"p/q\" has '/'",
        ),
        (
            vec![
                "run",
                "--from",
                "2018-08-28",
                "--to",
                "2018-08-30",
                "--run-id",
                "..",
            ],
            "run id \"..\" starts with a dot",
        ),
        (vec!["runs", "show", "../x"], "run id \"../x\" has '/'"),
        (
            vec!["predictions", "export", "--run", "a b", "--output", store],
            "run id \"a b\" has ' '",
        ),
        (
            vec!["run", "--from", "0", "--to", "253402300799999"],
            "is 2932896 days long; a run scores at most 3653 days (--max-window)",
        ),
        (
            vec![
                "run",
                "--from",
                "2018-08-28",
                "--to",
                "2018-09-28",
                "--max-window",
                "7d",
            ],
            "at most 7 days (--max-window)",
        ),
        (
            vec!["run", "--from", &"9".repeat(301), "--to", "2018-08-30"],
            "outside the supported range, years 1 to 9999",
        ),
        (vec!["run", "--last", "0s"], "--last must be longer than 0s"),
    ] {
        let o = fleet(Path::new(store), &args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).lines().count() == 1, "{}", stderr(&o));
    }
}

/// `run --last` (the CronJob's way, with no shell to compute times in) plans the previous whole
/// window; it and `--from`/`--to` exclude each other.
#[test]
fn run_last_plans_the_previous_whole_window() {
    let store = tempdir("run-last");
    let o = fleet(&store, &["run", "--detach", "--last", "1h"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    // `run YYYYMMDDTHH0000Z_YYYYMMDDTHH0000Z: planned ...`: on the hour, one hour long.
    let id = out
        .strip_prefix("run ")
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("{out}"));
    let (from, to) = id.split_once('_').unwrap_or_else(|| panic!("{out}"));
    let hour = |t: &str| {
        assert!(t.len() == 16 && t.ends_with("0000Z"), "{out}");
        chrono::NaiveDateTime::parse_from_str(t, "%Y%m%dT%H%M%SZ").unwrap()
    };
    assert_eq!(hour(to) - hour(from), chrono::TimeDelta::hours(1), "{out}");

    for args in [
        vec!["run", "--last", "1h", "--from", "2018-08-28"],
        vec!["run", "--from", "2018-08-28"],
    ] {
        let o = fleet(&store, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

/// The reference fleet imported into `store`, and its window planned with `run --detach` as
/// `run_id` on the coordinator `db` (default: the store's SQLite file). Returns what `run`
/// printed.
fn plan_reference_run(store: &Path, db: Option<&str>, run_id: &str) -> String {
    let models = models_data("reference/models");
    let data = models_data("reference/sensor_data.csv");
    let mut printed = String::new();
    for args in [
        vec![
            "models",
            "import",
            models.to_str().unwrap(),
            "--pattern",
            "model_{device}_{tag}",
        ],
        vec!["data", "import", data.to_str().unwrap()],
        vec![
            "run",
            "--detach",
            "--from",
            "2018-08-28T00:00:00Z",
            "--to",
            "2018-08-30T00:00:00Z",
            "--run-id",
            run_id,
        ],
    ] {
        let mut all: Vec<&str> = db.map(|d| vec!["--db", d]).unwrap_or_default();
        all.extend_from_slice(&args);
        let o = fleet(store, &all);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        printed = String::from_utf8(o.stdout).unwrap();
    }
    printed
}

/// Stateless workers on the PostgreSQL coordinator (the server `scripts/test` starts): a run
/// planned with `--detach`, a worker killed with SIGKILL in the middle of a task, and another
/// worker that takes the task over when the lease expires and finishes the run. Every reading
/// is predicted exactly once.
#[test]
fn a_worker_killed_mid_task_is_replaced_and_the_run_completes_once() {
    let Some(db) = common::postgres_schema("cli_workers", "workers on PostgreSQL") else {
        return;
    };
    let dir = tempdir("workers");
    let store = dir.join("store");
    let with_db = |args: &[&str]| {
        let mut all = vec!["--db", db.as_str()];
        all.extend_from_slice(args);
        fleet(&store, &all)
    };
    let planned = plan_reference_run(&store, Some(&db), "w");
    assert!(planned.contains("run w: planned 15 models"), "{planned}");

    let worker = |name: &str, delay_ms: &str| {
        bin()
            .arg("--store")
            .arg(&store)
            .args([
                "--db",
                &db,
                "worker",
                "--threads",
                "1",
                "--lease",
                "2",
                "--idle-exit",
                "4",
                "--name",
                name,
            ])
            .env("FLEETSCORE_FAULT_TASK_DELAY_MS", delay_ms)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start a worker")
    };
    // The first worker claims a task and hangs in it; it is killed as a machine dies.
    let mut doomed = worker("doomed", "600000");
    let claimed = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        String::from_utf8_lossy(&with_db(&["runs", "show", "w"]).stdout).contains("doomed-0")
    });
    assert!(claimed, "the first worker never claimed a task");
    doomed.kill().unwrap();
    doomed.wait().unwrap();

    // Another worker does everything else, then the abandoned task once its lease is over.
    let survivor = worker("survivor", "0").wait_with_output().unwrap();
    assert!(survivor.status.success(), "{}", stderr(&survivor));
    assert!(
        stderr(&survivor).contains("(1 runs finished here)"),
        "{}",
        stderr(&survivor)
    );

    let show = String::from_utf8(with_db(&["runs", "show", "w", "--json"]).stdout).unwrap();
    let record: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(record["status"], "succeeded", "{show}");
    assert_eq!(record["models_scored"], 15, "{show}");
    assert_eq!(record["rows"], 17768, "{show}");
    let tasks = String::from_utf8(with_db(&["runs", "show", "w"]).stdout).unwrap();
    // The task the killed worker held was done by the survivor, on the second attempt.
    assert!(
        tasks.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1..4] == ["done", "2", "survivor-0"]
        }),
        "{tasks}"
    );

    let workers = String::from_utf8(with_db(&["workers", "--json"]).stdout).unwrap();
    let workers: serde_json::Value = serde_json::from_str(&workers).unwrap();
    let survivor = workers
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["worker"] == "survivor-0")
        .expect("the survivor is listed");
    assert_eq!(survivor["done"], 3, "{workers}");

    // Exactly once: the export holds every reading once, as scikit-learn predicts it.
    let out = dir.join("export");
    let o = with_db(&[
        "predictions",
        "export",
        "--run",
        "w",
        "--format",
        "csv",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut rows: Vec<String> = Vec::new();
    for f in std::fs::read_dir(&out).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        rows.extend(text.lines().skip(1).map(str::to_string));
    }
    assert_eq!(rows.len(), 17768);
    rows.sort();
    rows.dedup();
    assert_eq!(rows.len(), 17768, "duplicated predictions");
}

/// A PostgreSQL server of this test's own (another port, so restarting it disturbs no other
/// test), stopped when dropped.
struct OwnPostgres {
    port: &'static str,
    url: String,
}

impl OwnPostgres {
    fn script(&self, command: &str) -> Output {
        std::process::Command::new("bash")
            .arg(
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../../scripts/services/postgres.sh"),
            )
            .arg(command)
            .env("POSTGRES_TEST_PORT", self.port)
            .output()
            .expect("run scripts/services/postgres.sh")
    }

    fn start(port: &'static str) -> OwnPostgres {
        let mut pg = OwnPostgres {
            port,
            url: String::new(),
        };
        let o = pg.script("start");
        assert!(o.status.success(), "{}", stderr(&o));
        pg.url = String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .to_string();
        pg
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self.script("stop");
    }
}

/// PostgreSQL crashes and comes back while a worker is in the middle of a run: the worker
/// reconnects, and the run completes with every reading predicted once.
#[test]
fn workers_reconnect_when_postgresql_restarts_mid_run() {
    if std::env::var("FLEETSCORE_TEST_POSTGRES").is_err() {
        eprintln!("FLEETSCORE_TEST_POSTGRES not set: PostgreSQL restarts not checked");
        return;
    }
    let pg = OwnPostgres::start("10433");
    let dir = tempdir("pg-restart");
    let store = dir.join("store");
    let with_db = |args: &[&str]| {
        let mut all = vec!["--db", pg.url.as_str()];
        all.extend_from_slice(args);
        fleet(&store, &all)
    };
    plan_reference_run(&store, Some(&pg.url), "restart");
    // Each task takes 3 s, so the restart lands in the middle of the run.
    let worker = bin()
        .arg("--store")
        .arg(&store)
        .args([
            "--db",
            &pg.url,
            "worker",
            "--threads",
            "1",
            "--lease",
            "30",
            "--idle-exit",
            "3",
            "--name",
            "steady",
        ])
        .env("FLEETSCORE_FAULT_TASK_DELAY_MS", "3000")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start a worker");
    let claimed = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        String::from_utf8_lossy(&with_db(&["runs", "show", "restart"]).stdout).contains("steady-0")
    });
    assert!(claimed, "the worker never claimed a task");
    let o = pg.script("restart");
    assert!(o.status.success(), "{}", stderr(&o));

    let out = worker.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("(1 runs finished here)"),
        "{}",
        stderr(&out)
    );
    let show = String::from_utf8(with_db(&["runs", "show", "restart", "--json"]).stdout).unwrap();
    let record: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(record["status"], "succeeded", "{show}");
    assert_eq!(record["rows"], 17768, "{show}");
}

/// A run planned for workers and cancelled before any picks it up: its record says so, and a
/// worker that comes later finds nothing to do. (Worker processes on one machine can share
/// the embedded SQLite coordinator too.)
#[test]
fn a_cancelled_run_is_not_executed() {
    let dir = tempdir("cancel");
    let store = dir.join("store");
    plan_reference_run(&store, None, "c");
    let o = fleet(&store, &["runs", "cancel", "c"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fleet(&store, &["runs", "cancel", "c"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("run \"c\" is not running"),
        "{}",
        stderr(&o)
    );
    let o = fleet(&store, &["worker", "--idle-exit", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("after 0 tasks"), "{}", stderr(&o));
    let show = String::from_utf8(fleet(&store, &["runs", "show", "c", "--json"]).stdout).unwrap();
    let record: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(record["status"], "cancelled", "{show}");
    assert_eq!(record["rows"], 0, "{show}");
    let list = String::from_utf8(fleet(&store, &["runs", "list"]).stdout).unwrap();
    assert!(list.starts_with("c\tcancelled"), "{list}");
}

/// The Kubernetes manifests and the Dockerfile in `deploy/` parse, and every setting the
/// worker Deployment, the CronJob and the ingest StatefulSet pass through the environment is
/// one the binary reads (checked against its own `--help` texts).
#[test]
fn deploy_manifests_parse_and_configure_only_known_settings() {
    let Ok(python) = std::env::var("FLEETSCORE_TEST_PYTHON") else {
        eprintln!("FLEETSCORE_TEST_PYTHON not set: deploy/ manifests not checked");
        return;
    };
    let dir = tempdir("deploy");
    let worker_help = dir.join("worker-help.txt");
    let global_help = dir.join("global-help.txt");
    std::fs::write(&worker_help, run(&["worker", "--help"]).stdout).unwrap();
    std::fs::write(&global_help, run(&["--help"]).stdout).unwrap();
    // The commands the ingest StatefulSet's containers run.
    let mut commands = Vec::new();
    for command in [["ingest", "serve"], ["aggregate", "run"]] {
        let path = dir.join(format!("{}-help.txt", command.join("-")));
        std::fs::write(&path, run(&[command[0], command[1], "--help"]).stdout).unwrap();
        commands.push(format!("{}={}", command.join(" "), path.display()));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let o = std::process::Command::new(python)
        .arg(root.join("scripts/check-deploy.py"))
        .arg("--worker-help")
        .arg(&worker_help)
        .arg("--global-help")
        .arg(&global_help)
        .args(commands.iter().flat_map(|c| ["--command-help", c.as_str()]))
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
}

/// The local autoscaler starts workers for a queued run (as many as the queue wants, at most
/// --max), they execute it, leave after the cooldown, and with --exit-when-idle so does it.
#[test]
fn the_autoscaler_runs_queued_work_and_scales_to_zero() {
    let dir = tempdir("autoscale");
    let store = dir.join("store");
    plan_reference_run(&store, None, "a");
    let o = fleet(
        &store,
        &[
            "autoscale",
            "--max",
            "2",
            "--tasks-per-worker",
            "1",
            "--cooldown",
            "1",
            "--poll",
            "0.1",
            "--exit-when-idle",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let log = stderr(&o);
    assert!(
        log.contains("3 queued tasks: scaling from 0 to 2 workers"),
        "{log}"
    );
    assert!(
        log.contains("queue empty and no worker left; exiting"),
        "{log}"
    );
    let show = String::from_utf8(fleet(&store, &["runs", "show", "a", "--json"]).stdout).unwrap();
    let record: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(record["status"], "succeeded", "{show}");
    assert_eq!(record["rows"], 17768, "{show}");
}

/// A worker paused (SIGSTOP) in the middle of a task loses its lease; another worker takes the
/// task over and finishes the run. When the paused worker resumes and finishes the task too,
/// it cannot replace the predictions the newer attempt wrote, nor complete the task, nor
/// change the run's record. (Worker processes on the embedded SQLite coordinator.)
#[test]
fn a_paused_worker_that_lost_its_lease_changes_nothing_when_it_resumes() {
    let dir = tempdir("paused");
    let store = dir.join("store");
    plan_reference_run(&store, None, "p");
    let worker = |name: &str, delay_ms: &str| {
        bin()
            .arg("--store")
            .arg(&store)
            .args([
                "worker",
                "--threads",
                "1",
                "--lease",
                "2",
                "--idle-exit",
                "3",
                "--name",
                name,
            ])
            .env("FLEETSCORE_FAULT_TASK_DELAY_MS", delay_ms)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start a worker")
    };
    let signal = |sig: &str, pid: u32| {
        let o = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .output()
            .unwrap();
        assert!(o.status.success(), "kill {sig}: {}", stderr(&o));
    };
    let paused = worker("paused", "1500");
    let claimed = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        String::from_utf8_lossy(&fleet(&store, &["runs", "show", "p"]).stdout).contains("paused-0")
    });
    assert!(claimed, "the first worker never claimed a task");
    signal("-STOP", paused.id());

    let survivor = worker("survivor", "0").wait_with_output().unwrap();
    assert!(survivor.status.success(), "{}", stderr(&survivor));
    let record_before = std::fs::read(store.join("runs/p.json")).unwrap();
    let predictions = store.join("predictions/run=p");
    let read_all = || {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&predictions)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    let written = read_all();

    // The paused worker wakes up, finishes its stale attempt, and leaves.
    signal("-CONT", paused.id());
    let resumed = paused.wait_with_output().unwrap();
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(
        stderr(&resumed).contains("after 1 tasks (0 runs finished here)"),
        "{}",
        stderr(&resumed)
    );
    assert_eq!(
        read_all(),
        written,
        "the stale attempt replaced predictions"
    );
    assert_eq!(
        std::fs::read(store.join("runs/p.json")).unwrap(),
        record_before,
        "the stale attempt changed the run record"
    );
    let logs: Vec<String> = std::fs::read_dir(store.join("logs/run=p"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        logs.iter().any(|l| l.contains("worker paused-0")
            && l.contains("already written by an earlier attempt: kept")),
        "{logs:?}"
    );
    let record: serde_json::Value = serde_json::from_slice(&record_before).unwrap();
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["rows"], 17768);
}

/// A task that keeps failing with an error a retry could help with (the store) is retried
/// until --max-attempts, then failed for good with its last error; the run finishes the rest
/// and reports it. (A worker process on the embedded SQLite coordinator, the failure injected.)
#[test]
fn a_task_that_keeps_failing_is_failed_after_its_attempts_and_the_run_goes_on() {
    let dir = tempdir("poison");
    let store = dir.join("store");
    plan_reference_run(&store, None, "x");
    let o = bin()
        .arg("--store")
        .arg(&store)
        .args(["worker", "--idle-exit", "1", "--max-attempts", "3"])
        .env("FLEETSCORE_FAULT_FAIL_SHARD", "0")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let show = String::from_utf8(fleet(&store, &["runs", "show", "x", "--json"]).stdout).unwrap();
    let record: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(record["status"], "completed_with_failures", "{show}");
    assert_eq!(record["tasks_failed"], 1, "{show}");
    let failure = &record["task_failures"][0];
    assert_eq!(
        (&failure["shard"], &failure["attempts"]),
        (&0.into(), &3.into()),
        "{show}"
    );
    assert!(
        failure["error"]
            .as_str()
            .unwrap()
            .contains("injected fault (FLEETSCORE_FAULT_FAIL_SHARD)"),
        "{show}"
    );
    // The other tasks' models were scored: 10 of the 15 (one task per device here).
    assert_eq!(record["models_scored"], 10, "{show}");
}

fn bomb(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../pickle/tests/data/bombs")
        .join(name)
}

/// `fleetscore ARGS` with its address space limited to 3 GiB: a load that ran away would
/// make the allocator fail and the process abort (a signal, not exit code 1).
fn fleet_limited(store: &Path, args: &[&std::ffi::OsStr]) -> Output {
    fleet_limited_to(3 * GIB, store, args)
}

const GIB: u64 = 1 << 30;

/// `fleetscore ARGS` with its address space limited to `bytes`.
fn fleet_limited_to(bytes: u64, store: &Path, args: &[&std::ffi::OsStr]) -> Output {
    Command::new("prlimit")
        .arg(format!("--as={bytes}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_fleetscore"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("run prlimit")
}

/// Small files that would take gigabytes — DUP, MEMOIZE and EMPTY_LIST + POP streams, and one
/// tree shared by 20,000 estimators — fail with the memory budget named, under an address-space
/// limit that an unbounded load would run into; a real model still loads under it.
#[test]
fn memory_bombs_fail_with_the_budget_named_and_never_abort() {
    let store = tempdir("bombs");
    let budget = "needs more than 1073741824 bytes of memory";
    for (name, stopped) in [
        ("dup.pkl.bz2", "stopped at byte"),
        ("memo.pkl.bz2", "stopped at byte"),
        ("lists.pkl.bz2", "stopped at byte"),
        ("shared_tree.pkl.bz2", "stopped at its `nodes`"),
    ] {
        let path = bomb(name);
        let o = fleet_limited(
            &store,
            &["models".as_ref(), "inspect".as_ref(), path.as_os_str()],
        );
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {:?} {err}", o.status);
        assert!(
            err.contains(budget) && err.contains(stopped),
            "{name}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let real = models_data("sklearn-current/iforest.p2.pkl");
    let o = fleet_limited(
        &store,
        &["models".as_ref(), "inspect".as_ref(), real.as_os_str()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // The budget is the user's to set: a real model over a small one is refused as a bomb is,
    // in `models inspect` and in `models import` alike.
    let small = ["--max-model-memory", "1MiB"];
    let o = fleet(
        &store,
        &[&["models", "inspect", real.to_str().unwrap()][..], &small].concat(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("needs more than 1048576 bytes"),
        "{}",
        stderr(&o)
    );
    let o = fleet(
        &store,
        &[
            &[
                "models",
                "import",
                real.to_str().unwrap(),
                "--device",
                "d",
                "--tag",
                "t",
            ][..],
            &small,
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("needs more than 1048576 bytes"),
        "{}",
        stderr(&o)
    );
    let o = fleet(&store, &["models", "list", "--max-model-memory", "2 GB"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("unknown unit `GB` (KiB, MiB, GiB)"),
        "{}",
        stderr(&o)
    );
}

/// One bad file in a folder fails alone: the bombs are refused with their reason, every other
/// model is imported and listed.
#[test]
fn a_bomb_in_a_models_folder_fails_alone() {
    let dir = tempdir("bomb-folder");
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    for f in std::fs::read_dir(models_data("reference/models")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, models.join(f.file_name().unwrap())).unwrap();
    }
    std::fs::copy(bomb("dup.pkl.bz2"), models.join("model_9_9")).unwrap();
    std::fs::copy(bomb("shared_tree.pkl.bz2"), models.join("model_8_8")).unwrap();
    let store = dir.join("store");
    let o = fleet_limited(
        &store,
        &["models".as_ref(), "import".as_ref(), models.as_os_str()],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{:?} {err}", o.status);
    assert!(err.contains("15 imported, 0 unchanged, 2 refused"), "{err}");
    assert!(err.contains("model_9_9: limit exceeded"), "{err}");
    let o = fleet(&store, &["models", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 15);
}

/// A readings file without rows, or without a column it needs, is an error naming the column
/// (it used to import nothing and succeed); ids are checked as ingest checks them; a model file
/// whose name is not UTF-8 is skipped by name instead of collapsing into another's id.
#[test]
fn inputs_without_their_columns_or_with_bad_ids_are_refused_by_name() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempdir("bad-inputs");
    let store = dir.join("store");
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    for (file, text, want) in [
        ("empty.csv", "", "the file is empty"),
        (
            "header-only.csv",
            "TS,Device,Tag\n",
            "no column `Value` (the file has TS, Device, Tag)",
        ),
        (
            "control.csv",
            "TS,Device,Tag,Value\n2018-08-28 00:00:00,a\u{1}b,1,2.0\n",
            "line 2: `device` contains the control character",
        ),
        (
            "blank.csv",
            "TS,Device,Tag,Value\n2018-08-28 00:00:00,1,  ,2.0\n",
            "line 2: `tag` is only white space",
        ),
        (
            "far.csv",
            "TS,Device,Tag,Value\n253402300800000,1,1,2.0\n",
            "line 2, column `TS`: \"253402300800000\" is not a time: outside the supported range",
        ),
    ] {
        let p = write(file, text);
        let o = fleet(&store, &["data", "import", p.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{file}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{file}: {}", stderr(&o));
    }
    // models score: the feature column named, even without rows.
    let model = models_data("sklearn-current/ocsvm_linear.p2.pkl");
    let p = write("no-rows.csv", "a,b\n");
    let out = dir.join("out.csv");
    let o = run(&[
        "models",
        "score",
        model.to_str().unwrap(),
        "--input",
        p.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--features",
        "x0,x1,x2",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no column `x0` (the table has: a, b)"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    // A model file named with bytes that are not UTF-8.
    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    let reference = models_data("reference/models/model_1_1");
    std::fs::copy(&reference, models.join("model_1_1")).unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"model_\xff_1");
    std::fs::copy(&reference, models.join(odd)).unwrap();
    let o = fleet(&store, &["models", "import", models.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("_1: the name is not valid UTF-8"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("1 imported"), "{}", stderr(&o));
    // --device/--tag are checked too.
    let o = fleet(
        &store,
        &[
            "models",
            "import",
            reference.to_str().unwrap(),
            "--device",
            " ",
            "--tag",
            "1",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("`device` is only white space"),
        "{}",
        stderr(&o)
    );
}

/// A table thousands of columns wide but a few kilobytes long costs memory by its data, not by
/// its header: `data import` reads only its four columns, `models score` builds each column as
/// its data needs.
#[test]
fn a_wide_file_costs_memory_by_its_data_not_its_header() {
    let dir = tempdir("wide");
    let mut header: Vec<String> = (0..20_000).map(|i| format!("c{i}")).collect();
    header.extend(["TS", "Device", "Tag", "Value"].map(String::from));
    let mut row: Vec<String> = vec!["0".into(); 20_000];
    row.extend(["2018-08-28 00:00:00", "1", "1", "2.5"].map(String::from));
    let path = dir.join("wide.csv");
    std::fs::write(&path, format!("{}\n{}\n", header.join(","), row.join(","))).unwrap();
    // 20,000 columns at a batch's reservation each would be about 17 GB; 1 GiB of address
    // space is plenty for the data.
    let store = dir.join("store");
    let o = fleet_limited_to(
        GIB,
        &store,
        &["data".as_ref(), "import".as_ref(), path.as_os_str()],
    );
    assert!(o.status.success(), "{:?} {}", o.status, stderr(&o));
    assert!(stderr(&o).contains("imported 1 readings"), "{}", stderr(&o));
    let model = models_data("reference/models/model_1_1");
    let out = dir.join("scored.csv");
    let o = fleet_limited_to(
        GIB,
        &store,
        &[
            "models".as_ref(),
            "score".as_ref(),
            model.as_os_str(),
            "--input".as_ref(),
            path.as_os_str(),
            "--output".as_ref(),
            out.as_os_str(),
            "--features".as_ref(),
            "Value".as_ref(),
        ],
    );
    assert!(o.status.success(), "{:?} {}", o.status, stderr(&o));
    assert!(std::fs::read_to_string(&out).unwrap().starts_with("c0,c1,"));
}

/// The reader `data import` uses serves `models score` and `aggregate file` too: Parquet from
/// Polars (zstd, large strings), pandas (text times as large strings) and pyarrow (gzip,
/// INT96), and gzip or zstd CSV, score and aggregate like the plain CSV.
#[test]
fn files_from_other_tools_score_and_aggregate_like_the_csv() {
    let dir = tempdir("other-tools");
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../jobs/tests/data/readings");
    let model = models_data("reference/models/model_1_1");
    let scores = |name: &str| -> Vec<String> {
        let out = dir.join(format!("{name}.scored.csv"));
        let o = run(&[
            "models",
            "score",
            model.to_str().unwrap(),
            "--input",
            data.join(name).to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--features",
            "Value",
        ]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let text = std::fs::read_to_string(&out).unwrap();
        // The score and anomaly columns, row by row.
        text.lines()
            .skip(1)
            .map(|l| l.rsplitn(3, ',').take(2).collect::<Vec<_>>().join(","))
            .collect()
    };
    let windows = |name: &str| -> Vec<u8> {
        let out = dir.join(format!("{name}.features.parquet"));
        let o = run(&[
            "aggregate",
            "file",
            "--input",
            data.join(name).to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        std::fs::read(&out).unwrap()
    };
    let want = scores("readings.csv");
    assert_eq!(want.len(), 240);
    let want_windows = windows("readings.csv");
    for name in [
        "polars.parquet",
        "pandas-text-times.parquet",
        "pyarrow-gzip.parquet",
        "pyarrow-int96.parquet",
        "readings.csv.gz",
        "readings.csv.zst",
    ] {
        assert_eq!(scores(name), want, "{name}");
        assert_eq!(windows(name), want_windows, "{name}");
    }
    // Compressed CSV is read, not written: asking for it fails before any work.
    let out = dir.join("scored.csv.gz");
    let o = run(&[
        "models",
        "score",
        model.to_str().unwrap(),
        "--input",
        data.join("readings.csv").to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--features",
        "Value",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("compressed CSV is read, not written"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
}

/// skops files work wherever pickles do: `models score` (scikit-learn's numbers, the feature
/// names the model stores), `models inspect`, and `models import` of a folder, where a hostile
/// skops file fails alone with its reason.
#[test]
fn skops_files_score_inspect_and_import_like_pickles() {
    let dir = tempdir("skops");
    let golden: serde_json::Value = serde_json::from_slice(
        &std::fs::read(models_data("sklearn-current/scaler_ocsvm_rbf.json")).unwrap(),
    )
    .unwrap();
    let mut csv = String::from("temp,pressure,vibration\n");
    for row in golden["X"].as_array().unwrap() {
        let v: Vec<String> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap().to_string())
            .collect();
        csv.push_str(&format!("{}\n", v.join(",")));
    }
    let input = dir.join("in.csv");
    std::fs::write(&input, csv).unwrap();
    let out = dir.join("out.csv");
    let model = models_data("sklearn-current/scaler_ocsvm_rbf.deflate.skops");
    let o = run(&[
        "models",
        "score",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let want = golden["decision_function"].as_array().unwrap();
    let want_pred = golden["predict"].as_array().unwrap();
    assert_eq!(rows.len(), want.len());
    for ((row, w), p) in rows.iter().zip(want).zip(want_pred) {
        let (g, w): (f64, f64) = (row[3].parse().unwrap(), w.as_f64().unwrap());
        assert!((g - w).abs() <= 1e-9 * w.abs(), "{g} vs {w}");
        let anomaly = if p.as_i64() == Some(-1) { "1" } else { "0" };
        assert_eq!(row[4], anomaly);
    }

    let o = run(&["models", "inspect", model.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], "skops (deflate), protocol 2");
    assert_eq!(v["estimator"], "Pipeline(StandardScaler, OneClassSVM)");
    assert_eq!(v["n_features"], 3);

    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    for (from, to) in [
        (
            models_data("sklearn-current/ocsvm_rbf_1d.skops"),
            "model_1_1.skops",
        ),
        (
            models_data("sklearn-current/ocsvm_rbf_1d.deflate.skops"),
            "model_1_2.skops",
        ),
        (
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../pickle/tests/data/hostile-skops/path_dotdot.skops"),
            "model_9_9.skops",
        ),
    ] {
        std::fs::copy(from, models.join(to)).unwrap();
    }
    let store = dir.join("store");
    let o = fleet(
        &store,
        &[
            "models",
            "import",
            models.to_str().unwrap(),
            "--pattern",
            "model_{device}_{tag}.skops",
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("2 imported, 0 unchanged, 1 refused"), "{err}");
    assert!(
        err.contains("model_9_9.skops: bad skops file: zip member `../../tmp/fleetscore-evil.npy`: has an unsafe name"),
        "{err}"
    );
    let o = fleet(&store, &["models", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(listed.lines().count(), 2, "{listed}");
}

/// Workers and runs on a PostgreSQL that takes only TLS (`sslmode=verify-full`, the test CA in
/// `sslrootcert`): the run completes; a wrong root certificate and a wrong password are refused
/// in one line; the password shows in no output, error or record.
#[test]
fn workers_and_runs_work_over_tls_with_verify_full_and_the_password_is_never_shown() {
    const PASSWORD: &str = "fleetscore-tls-test-pw";
    let Some(db) = common::postgres_schema_on(
        "FLEETSCORE_TEST_POSTGRES_TLS",
        "cli_tls",
        "PostgreSQL over TLS",
    ) else {
        return;
    };
    assert!(db.contains("sslmode=verify-full") && db.contains(PASSWORD));
    let dir = tempdir("pgtls");
    let store = dir.join("store");
    let mut printed = plan_reference_run(&store, Some(&db), "t");
    assert!(printed.contains("run t: planned 15 models"), "{printed}");
    let o = bin()
        .arg("--store")
        .arg(&store)
        .args(["--db", &db, "worker", "--threads", "2", "--idle-exit", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    printed.push_str(&String::from_utf8_lossy(&o.stdout));
    printed.push_str(&stderr(&o));
    let o = fleet(&store, &["--db", &db, "runs", "show", "t", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(shown["status"], "succeeded", "{shown}");
    printed.push_str(&String::from_utf8_lossy(&o.stdout));

    // A root certificate that did not sign the server's, and a wrong password.
    let other = fleetscore_tls::testing::TestCa::new(&dir, "other");
    let (base, query) = db.split_once('?').unwrap();
    let wrong_root = format!(
        "{base}?{}",
        query
            .split('&')
            .map(|p| if p.starts_with("sslrootcert=") {
                format!("sslrootcert={}", other.ca_file().display())
            } else {
                p.to_string()
            })
            .collect::<Vec<_>>()
            .join("&")
    );
    let o = fleet(&store, &["--db", &wrong_root, "runs", "list"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("not signed by a trusted CA"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    printed.push_str(&err);
    let o = fleet(
        &store,
        &[
            "--db",
            &db.replace(PASSWORD, "wrong-password"),
            "runs",
            "list",
        ],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("wrong-password"), "{err}");
    printed.push_str(&err);

    assert!(
        !printed.contains(PASSWORD),
        "the password was printed:\n{printed}"
    );
    // Nor is it in any record the run left in the store.
    let mut files = vec![store.clone()];
    while let Some(f) = files.pop() {
        if f.is_dir() {
            files.extend(std::fs::read_dir(&f).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !bytes
                    .windows(PASSWORD.len())
                    .any(|w| w == PASSWORD.as_bytes()),
                "the password is in {}",
                f.display()
            );
        }
    }
}

/// Azure credentials from the environment, as object_store takes them, against Azurite: the
/// account key and a SAS token each open the store, a wrong one of either is refused, and no
/// secret shows in what the command prints.
#[test]
fn azure_account_key_and_sas_token_come_from_the_environment() {
    use base64::Engine;
    let Ok(url) = std::env::var("FLEETSCORE_TEST_AZURE_STORE") else {
        eprintln!("FLEETSCORE_TEST_AZURE_STORE not set: Azure credentials not checked");
        return;
    };
    // Azurite's well-known account and key.
    const ACCOUNT: &str = "devstoreaccount1";
    const KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    let b64 = base64::engine::general_purpose::STANDARD;
    let wrong_key = b64.encode([7u8; 64]);
    // An account SAS (blob service; service, container and object; read, write, delete, list,
    // add, create), signed with the key as Azure does.
    let sas = |key: &str| {
        let (version, expiry) = ("2021-06-08", "2099-01-01T00:00:00Z");
        let to_sign = format!("{ACCOUNT}\nrwdlac\nb\nsco\n\n{expiry}\n\nhttps,http\n{version}\n\n");
        let mac =
            aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &b64.decode(key).unwrap());
        let sig = b64.encode(aws_lc_rs::hmac::sign(&mac, to_sign.as_bytes()));
        let sig = sig
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        format!("sv={version}&ss=b&srt=sco&sp=rwdlac&se={expiry}&spr=https,http&sig={sig}")
    };
    let (good_sas, bad_sas) = (sas(KEY), sas(&wrong_key));
    let dir = tempdir("azure-creds");
    let store = format!("{url}/creds-{}", std::process::id());
    let model = models_data("reference/models").join("model_1_1");
    // `models import` writes the store, `models list` lists it.
    let with = |var: &str, value: &str, args: &[&str]| {
        bin()
            .current_dir(&dir)
            .env("AZURE_STORAGE_USE_EMULATOR", "true")
            .env("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT)
            .env_remove("AZURE_STORAGE_ACCOUNT_KEY")
            .env_remove("AZURE_STORAGE_SAS_KEY")
            .env(var, value)
            .args(["--store", &store])
            .args(args)
            .output()
            .unwrap()
    };
    let import = [
        "models",
        "import",
        model.to_str().unwrap(),
        "--device",
        "d1",
        "--tag",
        "pressure",
    ];
    for (var, good, bad) in [
        ("AZURE_STORAGE_ACCOUNT_KEY", KEY, wrong_key.as_str()),
        ("AZURE_STORAGE_SAS_KEY", good_sas.as_str(), bad_sas.as_str()),
    ] {
        let o = with(var, good, &import);
        assert!(o.status.success(), "{var}: {}", stderr(&o));
        let o = with(var, good, &["models", "list"]);
        assert!(o.status.success(), "{var}: {}", stderr(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("pressure"),
            "{var}"
        );
        let o = with(var, bad, &["models", "list"]);
        assert!(
            !o.status.success(),
            "{var}: a wrong credential was accepted"
        );
        let printed = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
        eprintln!("{var}, wrong: {printed}");
        for secret in [good, bad] {
            assert!(
                !printed.contains(secret),
                "{var}: a secret is shown: {printed}"
            );
        }
    }
}

/// Output piped into a reader that has gone (`fleetscore models bench M | head -0`) ends the
/// command as it ends coreutils: status 141 and no panic message.
#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    let dir = tempdir("pipe");
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/data/reference/models/model_1_1");
    let mut child = bin()
        .args(["models", "bench", "--rows", "10"])
        .arg(model)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reading end closes before the command has printed anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
