//! The body parsers against arbitrary and mangled input: they never panic, never accept a
//! record that breaks a rule, and every valid record comes back exactly.

use fleetscore_ingest::parse::{AnyDevice, At, Format, parse};
use fleetscore_ingest::{Limits, Reading};
use proptest::prelude::*;

const NOW: i64 = 1_767_225_600_000;

fn formats() -> impl Strategy<Value = Format> {
    prop_oneof![
        Just(Format::JsonLines),
        Just(Format::Json),
        Just(Format::Csv)
    ]
}

fn reading() -> impl Strategy<Value = Reading> {
    (
        "[a-zA-Z0-9_.:-]{1,20}",
        "[a-zA-Z0-9_]{1,12}",
        946_684_800_000i64..NOW,
        prop_oneof![
            any::<f64>().prop_filter("finite", |v| v.is_finite()),
            -1e6f64..1e6
        ],
    )
        .prop_map(|(device, tag, ts_ms, value)| Reading {
            device,
            tag,
            ts_ms,
            value,
        })
}

fn json_line(r: &Reading) -> String {
    serde_json::json!({"device": r.device, "tag": r.tag, "ts": r.ts_ms, "value": r.value})
        .to_string()
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn arbitrary_bytes_never_panic_and_never_pass_a_bad_reading(
        body in proptest::collection::vec(any::<u8>(), 0..600),
        format in formats(),
    ) {
        let p = parse(&body, format, &Limits::default(), NOW, &AnyDevice);
        for r in &p.readings {
            prop_assert!(r.check(&Limits::default(), NOW).is_ok());
        }
    }

    #[test]
    fn valid_readings_come_back_exactly(
        readings in proptest::collection::vec(reading(), 1..40),
        format in formats(),
    ) {
        // Distinct keys: a repeat within a request is refused by design.
        let mut seen = std::collections::HashSet::new();
        let readings: Vec<Reading> = readings
            .into_iter()
            .filter(|r| seen.insert((r.device.clone(), r.tag.clone(), r.ts_ms)))
            .collect();
        let body = match format {
            Format::JsonLines => readings.iter().map(json_line).collect::<Vec<_>>().join("\n"),
            Format::Json => format!("[{}]", readings.iter().map(json_line).collect::<Vec<_>>().join(",")),
            Format::Csv => std::iter::once("value,ts,tag,device".to_string())
                .chain(readings.iter().map(|r| format!("{:?},{},{},{}", r.value, r.ts_ms, r.tag, r.device)))
                .collect::<Vec<_>>()
                .join("\n"),
        };
        let p = parse(body.as_bytes(), format, &Limits::default(), NOW, &AnyDevice);
        prop_assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        prop_assert_eq!(p.readings, readings);
    }

    #[test]
    fn a_mangled_line_is_refused_alone_with_its_line_number(
        readings in proptest::collection::vec(reading(), 2..30),
        victim in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut seen = std::collections::HashSet::new();
        let readings: Vec<Reading> = readings
            .into_iter()
            .filter(|r| seen.insert((r.device.clone(), r.tag.clone(), r.ts_ms)))
            .collect();
        let v = victim.index(readings.len());
        let mut lines: Vec<String> = readings.iter().map(json_line).collect();
        // Cut the victim short of its closing brace: never valid JSON.
        let n = cut.index(lines[v].len() - 1);
        lines[v].truncate(n);
        if lines[v].trim().is_empty() {
            lines[v] = "{".into();
        }
        let p = parse(lines.join("\n").as_bytes(), Format::JsonLines, &Limits::default(), NOW, &AnyDevice);
        prop_assert_eq!(p.rejected.len(), 1);
        prop_assert_eq!(p.rejected[0].at, At::Line(v + 1));
        let mut want = readings.clone();
        want.remove(v);
        prop_assert_eq!(p.readings, want);
    }
}
