//! Parameters and data scikit-learn refuses are refused here too, with the parameter named;
//! defaults are scikit-learn's; degenerate data fits without panicking.

use fleetscore_train::{Error, FittedOcsvm, Gamma, Kernel, OcsvmParams, ScalerSpec, fit_ocsvm};

const X: [f64; 8] = [0.0, 1.0, 0.5, 1.5, 1.0, 0.2, 0.3, 0.9];

fn param_error(params: OcsvmParams) -> &'static str {
    match FittedOcsvm::fit(&X, 2, ScalerSpec::None, &params) {
        Err(Error::Param { name, .. }) => name,
        other => panic!("{params:?} gave {other:?}"),
    }
}

#[test]
fn defaults_are_scikit_learns() {
    let p = OcsvmParams::default();
    assert_eq!(p.kernel, Kernel::Rbf);
    assert_eq!(p.degree, 3);
    assert_eq!(p.gamma, Gamma::Scale);
    assert_eq!(p.coef0, 0.0);
    assert_eq!(p.tol, 1e-3);
    assert_eq!(p.nu, 0.5);
    assert!(p.shrinking);
    assert_eq!(p.cache_size, 200.0);
    assert_eq!(p.max_iter, -1);
}

#[test]
fn out_of_range_parameters_name_themselves() {
    let d = OcsvmParams::default;
    for nu in [0.0, -0.1, 1.000001, f64::NAN] {
        assert_eq!(param_error(OcsvmParams { nu, ..d() }), "nu");
    }
    for g in [-1.0, f64::INFINITY, f64::NAN] {
        assert_eq!(
            param_error(OcsvmParams {
                gamma: Gamma::Value(g),
                ..d()
            }),
            "gamma"
        );
    }
    for tol in [0.0, -1e-3, f64::INFINITY] {
        assert_eq!(param_error(OcsvmParams { tol, ..d() }), "tol");
    }
    assert_eq!(
        param_error(OcsvmParams {
            coef0: f64::NAN,
            ..d()
        }),
        "coef0"
    );
    assert_eq!(param_error(OcsvmParams { degree: -1, ..d() }), "degree");
    assert_eq!(
        param_error(OcsvmParams {
            cache_size: 0.0,
            ..d()
        }),
        "cache_size"
    );
    assert_eq!(
        param_error(OcsvmParams {
            max_iter: -2,
            ..d()
        }),
        "max_iter"
    );
    let bad_range = FittedOcsvm::fit(
        &X,
        2,
        ScalerSpec::MinMax { min: 1.0, max: 1.0 },
        &OcsvmParams::default(),
    );
    assert!(matches!(
        bad_range,
        Err(Error::Param {
            name: "feature_range",
            ..
        })
    ));
}

#[test]
fn bad_data_is_a_data_error_naming_the_value() {
    let p = OcsvmParams::default();
    assert!(matches!(
        FittedOcsvm::fit(&[], 2, ScalerSpec::None, &p),
        Err(Error::Data(_))
    ));
    assert!(matches!(
        FittedOcsvm::fit(&X, 0, ScalerSpec::None, &p),
        Err(Error::Data(_))
    ));
    assert!(matches!(
        FittedOcsvm::fit(&X, 3, ScalerSpec::None, &p),
        Err(Error::Data(_))
    ));
    let mut x = X;
    x[5] = f64::NAN;
    match FittedOcsvm::fit(&x, 2, ScalerSpec::None, &p) {
        Err(Error::Data(m)) => assert!(m.contains("row 2, feature 1"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Finite input whose mean overflows, so that the centred values do not exist: scikit-learn
    // refuses the scaler's output.
    let huge = [f64::MAX, f64::MAX, -f64::MAX, 1.0];
    let centre = ScalerSpec::Standard {
        with_mean: true,
        with_std: false,
    };
    match FittedOcsvm::fit(&huge, 1, centre, &p) {
        Err(Error::Data(m)) => assert!(m.contains("scaled"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn nu_one_is_refused_after_the_fit_as_scikit_learn_refuses_it() {
    let p = OcsvmParams {
        nu: 1.0,
        ..OcsvmParams::default()
    };
    match FittedOcsvm::fit(&X, 2, ScalerSpec::None, &p) {
        Err(Error::Data(m)) => assert!(m.contains("not finite"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn degenerate_data_fits_without_panicking() {
    let rows = 25;
    let constant = vec![3.5; rows * 2];
    let two: Vec<f64> = (0..rows * 2).map(|i| (i % 2) as f64).collect();
    let huge: Vec<f64> = (0..rows * 2)
        .map(|i| 1e12 * ((i * 7 % 13) as f64))
        .collect();
    let tiny: Vec<f64> = (0..rows * 2)
        .map(|i| 1e-12 * ((i * 5 % 11) as f64))
        .collect();
    let scalers = [
        ScalerSpec::None,
        ScalerSpec::Standard {
            with_mean: true,
            with_std: true,
        },
        ScalerSpec::MinMax { min: 0.0, max: 1.0 },
    ];
    for x in [&constant, &two, &huge, &tiny, &vec![1.0, 2.0]] {
        for scaler in scalers {
            for kernel in [Kernel::Rbf, Kernel::Linear, Kernel::Poly, Kernel::Sigmoid] {
                let p = OcsvmParams {
                    kernel,
                    nu: 0.3,
                    ..OcsvmParams::default()
                };
                // A fit may be refused (an infinite ρ from an overflowing kernel), never panic.
                if let Ok(t) = fit_ocsvm(x, 2, scaler, &p) {
                    let get = |k| t.metrics.iter().find(|(n, _)| *n == k).unwrap().1;
                    assert!(get("n_support") >= 1.0);
                    assert!((0.0..=1.0).contains(&get("train_outlier_fraction")));
                    fleetscore_models::Model::from_bytes(&t.pickle).unwrap();
                }
            }
        }
    }
}
