//! Every golden case of `scripts/fixtures/gen_train.py` (scikit-learn 1.9.1's own fits) fitted
//! here: the same scaler, γ, support vectors, coefficients, ρ and iteration count; the same
//! decision values on held-out rows, computed here and by fleetscore's scorer from the written
//! pickle; and, with `FLEETSCORE_TEST_PYTHON`, scikit-learn itself loading that pickle.

use std::path::{Path, PathBuf};

use fleetscore_models::Model;
use fleetscore_train::scale::FittedScaler;
use fleetscore_train::{Error, FittedOcsvm, Gamma, Kernel, OcsvmParams, ScalerSpec};
use serde_json::Value as Json;

use crate::data;

fn floats(v: &Json) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("array expected, got {v}"))
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn matrix(v: &Json) -> Vec<f64> {
    v.as_array()
        .expect("rows")
        .iter()
        .flat_map(floats)
        .collect()
}

/// A golden case: the data, what to fit, and what scikit-learn got.
struct Case {
    name: String,
    n_features: usize,
    x: Vec<f64>,
    x_test: Vec<f64>,
    scaler: ScalerSpec,
    params: OcsvmParams,
    json: Json,
}

fn load_cases() -> Vec<Case> {
    let manifest: Json =
        serde_json::from_slice(&std::fs::read(data("ocsvm/manifest.json")).expect("manifest"))
            .expect("parse manifest");
    manifest["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|name| {
            let name = name.as_str().expect("case name");
            let json: Json = serde_json::from_slice(
                &std::fs::read(data(&format!("ocsvm/{name}.json"))).expect("case file"),
            )
            .expect("parse case");
            let p = &json["params"];
            let params = OcsvmParams {
                kernel: match p["kernel"].as_str().unwrap() {
                    "rbf" => Kernel::Rbf,
                    "linear" => Kernel::Linear,
                    "poly" => Kernel::Poly,
                    "sigmoid" => Kernel::Sigmoid,
                    k => panic!("kernel {k}"),
                },
                degree: p["degree"].as_i64().unwrap() as i32,
                gamma: match &p["gamma"] {
                    Json::String(s) if s == "scale" => Gamma::Scale,
                    Json::String(s) if s == "auto" => Gamma::Auto,
                    g => Gamma::Value(g.as_f64().unwrap()),
                },
                coef0: p["coef0"].as_f64().unwrap(),
                tol: p["tol"].as_f64().unwrap(),
                nu: p["nu"].as_f64().unwrap(),
                shrinking: p["shrinking"].as_bool().unwrap(),
                cache_size: p["cache_size"].as_f64().unwrap(),
                max_iter: p["max_iter"].as_i64().unwrap(),
            };
            let s = &json["scaler"];
            let scaler = match s["kind"].as_str() {
                None => ScalerSpec::None,
                Some("standard") => ScalerSpec::Standard {
                    with_mean: s["with_mean"].as_bool().unwrap(),
                    with_std: s["with_std"].as_bool().unwrap(),
                },
                Some("minmax") => ScalerSpec::MinMax {
                    min: s["min"].as_f64().unwrap(),
                    max: s["max"].as_f64().unwrap(),
                },
                Some(k) => panic!("scaler {k}"),
            };
            Case {
                name: name.to_string(),
                n_features: json["n_features"].as_u64().unwrap() as usize,
                x: matrix(&json["X"]),
                x_test: matrix(&json["X_test"]),
                scaler,
                params,
                json,
            }
        })
        .collect()
}

/// The largest differences seen over all cases, by quantity, for the report.
#[derive(Default)]
struct Worst {
    entries: Vec<(String, f64, String)>,
}

impl Worst {
    fn see(&mut self, what: &str, rel: f64, case: &str) {
        match self.entries.iter_mut().find(|(w, _, _)| w == what) {
            Some(e) if rel > e.1 => {
                e.1 = rel;
                e.2 = case.to_string();
            }
            Some(_) => {}
            None => self.entries.push((what.to_string(), rel, case.to_string())),
        }
    }
}

/// Compares vectors element by element within `tol` relative; a difference is measured against
/// `floor(i)` when the value itself is smaller (a decision value near zero is the difference of
/// larger terms, and is only as exact as they are).
#[allow(clippy::too_many_arguments)]
fn compare(
    errors: &mut Vec<String>,
    worst: &mut Worst,
    case: &str,
    what: &str,
    got: &[f64],
    want: &[f64],
    tol: f64,
    floor: impl Fn(usize) -> f64,
) {
    if got.len() != want.len() {
        errors.push(format!(
            "{case}: {what}: {} values, scikit-learn has {}",
            got.len(),
            want.len()
        ));
        return;
    }
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let r = if g == w {
            0.0
        } else {
            (g - w).abs() / w.abs().max(floor(i))
        };
        worst.see(what, r, case);
        if r.is_nan() || r > tol {
            errors.push(format!(
                "{case}: {what}[{i}] = {g:e}, scikit-learn {w:e} (relative {r:e})"
            ));
        }
    }
}

fn check_scaler(errors: &mut Vec<String>, worst: &mut Worst, case: &Case, scaler: &FittedScaler) {
    let want = &case.json["expected"]["scaler"];
    let name = &case.name;
    let opt = |v: &Json| (!v.is_null()).then(|| floats(v));
    let mut check = |what: &str, got: Option<&Vec<f64>>, want: Option<Vec<f64>>| match (got, want) {
        (Some(g), Some(w)) => compare(errors, worst, name, what, g, &w, 1e-12, |_| 0.0),
        (None, None) => {}
        (g, w) => errors.push(format!("{name}: {what}: {g:?}, scikit-learn {w:?}")),
    };
    match scaler {
        FittedScaler::Standard(s) => {
            check("mean_", s.mean.as_ref(), opt(&want["mean"]));
            check("var_", s.var.as_ref(), opt(&want["var"]));
            check("scale_", s.scale.as_ref(), opt(&want["scale"]));
            if s.n_samples_seen as u64 != want["n_samples_seen"].as_u64().unwrap() {
                errors.push(format!("{name}: n_samples_seen_ {}", s.n_samples_seen));
            }
        }
        FittedScaler::MinMax(s) => {
            check("data_min_", Some(&s.data_min), opt(&want["data_min"]));
            check("data_max_", Some(&s.data_max), opt(&want["data_max"]));
            check("data_range_", Some(&s.data_range), opt(&want["data_range"]));
            check("minmax scale_", Some(&s.scale), opt(&want["scale"]));
            check("min_", Some(&s.min), opt(&want["min"]));
        }
    }
}

/// Checks one fitted case against scikit-learn's numbers; pushes what differs.
fn check_fit(errors: &mut Vec<String>, worst: &mut Worst, case: &Case, fitted: &FittedOcsvm) {
    let want = &case.json["expected"];
    let name = &case.name;
    let svm = &fitted.svm;
    if let Some(s) = &fitted.scaler {
        check_scaler(errors, worst, case, s);
    }
    let gamma = want["gamma"].as_f64().unwrap();
    compare(
        errors,
        worst,
        name,
        "_gamma",
        &[svm.gamma],
        &[gamma],
        1e-12,
        |_| 0.0,
    );
    let support: Vec<usize> = want["support"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    if svm.support != support {
        errors.push(format!(
            "{name}: support_ has {} rows {:?}..., scikit-learn {} rows {:?}...",
            svm.support.len(),
            &svm.support[..svm.support.len().min(8)],
            support.len(),
            &support[..support.len().min(8)]
        ));
        return;
    }
    let rho = -want["intercept"].as_f64().unwrap();
    compare(
        errors,
        worst,
        name,
        "dual_coef_",
        &svm.dual_coef,
        &floats(&want["dual_coef"]),
        1e-12,
        |_| 0.0,
    );
    compare(
        errors,
        worst,
        name,
        "rho",
        &[svm.rho()],
        &[rho],
        1e-12,
        |_| 0.0,
    );
    let n_iter = want["n_iter"].as_u64().unwrap();
    if svm.n_iter != n_iter {
        errors.push(format!(
            "{name}: n_iter_ {}, scikit-learn {n_iter}",
            svm.n_iter
        ));
    }
    if i64::from(svm.fit_status) != want["fit_status"].as_i64().unwrap() {
        errors.push(format!("{name}: fit_status_ {}", svm.fit_status));
    }
    compare(
        errors,
        worst,
        name,
        "decision_function",
        &fitted.decision_function(&case.x_test),
        &floats(&want["decision_function"]),
        1e-9,
        |_| rho.abs(),
    );
    let predict = want["predict_train"].as_array().unwrap();
    let outliers = predict.iter().filter(|v| v.as_i64() == Some(-1)).count();
    let fraction = outliers as f64 / predict.len() as f64;
    if fitted.train_outlier_fraction != fraction {
        errors.push(format!(
            "{name}: train outlier fraction {}, scikit-learn {fraction}",
            fitted.train_outlier_fraction
        ));
    }

    // The pickle, read back by fleetscore's own loader, scores like scikit-learn. That scorer
    // sums in its own order (not libsvm's), so a value near zero is compared in units of the
    // terms it is the difference of.
    let terms = term_scale(fitted, &case.x_test);
    let model = match Model::from_bytes(&fitted.to_pickle()) {
        Ok(m) => m,
        Err(e) => {
            errors.push(format!("{name}: the written pickle does not load: {e}"));
            return;
        }
    };
    let rows = case.x_test.len() / case.n_features;
    let mut got = vec![0.0; rows];
    model.decision_function(&case.x_test, &mut got).unwrap();
    compare(
        errors,
        worst,
        name,
        "pickle decision_function",
        &got,
        &floats(&want["decision_function"]),
        1e-9,
        |i| terms[i],
    );
    model.score_samples(&case.x_test, &mut got).unwrap();
    compare(
        errors,
        worst,
        name,
        "pickle score_samples",
        &got,
        &floats(&want["score_samples"]),
        1e-9,
        |i| terms[i],
    );
}

/// `Σ|α_i K(x, sv_i)| + |ρ|` for each row of `x`: the size of the terms a decision value is
/// the difference of, so the scale of its rounding error.
fn term_scale(fitted: &FittedOcsvm, x: &[f64]) -> Vec<f64> {
    let svm = &fitted.svm;
    let p = &svm.params;
    let d = svm.n_features;
    let mut scaled = x.to_vec();
    if let Some(s) = &fitted.scaler {
        s.transform(&mut scaled);
    }
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(u, v)| u * v).sum::<f64>();
    scaled
        .chunks_exact(d)
        .map(|row| {
            let mut total = svm.rho().abs();
            for (sv, a) in svm.support_vectors.chunks_exact(d).zip(&svm.dual_coef) {
                let k = match p.kernel {
                    Kernel::Linear => dot(row, sv),
                    Kernel::Poly => (svm.gamma * dot(row, sv) + p.coef0).powi(p.degree),
                    Kernel::Sigmoid => (svm.gamma * dot(row, sv) + p.coef0).tanh(),
                    Kernel::Rbf => {
                        let d2: f64 = row.iter().zip(sv).map(|(u, v)| (u - v) * (u - v)).sum();
                        (-svm.gamma * d2).exp()
                    }
                };
                total += (a * k).abs();
            }
            total
        })
        .collect()
}

#[test]
fn one_class_svm_fits_as_scikit_learn_fits() {
    let cases = load_cases();
    assert!(cases.len() >= 50, "only {} golden cases", cases.len());
    let mut errors = Vec::new();
    let mut worst = Worst::default();
    let mut refused = 0;
    for case in &cases {
        let result = FittedOcsvm::fit(&case.x, case.n_features, case.scaler, &case.params);
        if let Some(message) = case.json["error"].as_str() {
            refused += 1;
            match result {
                Err(Error::Data(_)) => {}
                other => errors.push(format!(
                    "{}: scikit-learn refuses it ({message}); here {:?}",
                    case.name,
                    other.map(|f| f.svm.intercept)
                )),
            }
            continue;
        }
        match result {
            Ok(fitted) => check_fit(&mut errors, &mut worst, case, &fitted),
            Err(e) => errors.push(format!("{}: {e}", case.name)),
        }
    }
    eprintln!(
        "{} golden cases ({refused} refused as scikit-learn refuses them); largest relative differences:",
        cases.len()
    );
    for (what, r, case) in &worst.entries {
        eprintln!("  {what:<28} {r:.3e}  ({case})");
    }
    assert!(
        errors.is_empty(),
        "{} mismatches:\n{}",
        errors.len(),
        errors[..errors.len().min(40)].join("\n")
    );
}

/// A scratch directory for this test process.
fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fleetscore-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `tests/check_pickles.py` on `dir` with `python`; panics with its output on failure.
fn run_python_check(python: &str, dir: &Path) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/check_pickles.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg(dir)
        .arg(data("ocsvm"))
        .output()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    eprint!("{stdout}");
}

#[test]
fn scikit_learn_loads_the_written_pickles_and_scores_as_its_own_fit() {
    // Runs where the test script provides a Python with scikit-learn (CI does).
    let Ok(python) = std::env::var("FLEETSCORE_TEST_PYTHON") else {
        eprintln!("FLEETSCORE_TEST_PYTHON not set: written pickles not loaded in scikit-learn");
        return;
    };
    let dir = scratch("pickles");
    let mut written = 0;
    for case in load_cases() {
        if case.json.get("error").is_some() {
            continue;
        }
        let fitted = FittedOcsvm::fit(&case.x, case.n_features, case.scaler, &case.params)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        std::fs::write(dir.join(format!("{}.pkl", case.name)), fitted.to_pickle()).unwrap();
        written += 1;
    }
    assert!(written >= 50);
    run_python_check(&python, &dir);
    let _ = std::fs::remove_dir_all(&dir);
}
