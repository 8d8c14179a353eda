//! The engine against a direct computation of the same windows.

use std::collections::BTreeMap;

use fleetscore_aggregate::{Config, Engine, Range, Stats};

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const T0: i64 = 1_767_225_600_000;

/// `(device, tag, ts, value)` readings: `series` series, one every 1–3 s each, arriving out of
/// order by up to `jitter_ms`.
fn readings(
    series: usize,
    seconds: i64,
    jitter_ms: i64,
    seed: u64,
) -> Vec<(String, String, i64, f64)> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    for s in 0..series {
        let mut ts = T0 + rng.below(3_000) as i64;
        while ts < T0 + seconds * 1000 {
            let value = (rng.below(10_000) as f64) / 100.0 - 20.0;
            out.push((
                format!("dev-{}", s / 3),
                format!("tag-{}", s % 3),
                ts,
                value,
            ));
            ts += 1_000 + rng.below(2_000) as i64;
        }
    }
    // Arrival order: by time plus a random delay.
    let mut keyed: Vec<(i64, usize)> = out
        .iter()
        .enumerate()
        .map(|(i, r)| (r.2 + rng.below(jitter_ms as u64 + 1) as i64, i))
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, i)| out[i].clone()).collect()
}

type Windows = BTreeMap<(String, String, i64), (i64, Stats)>;

/// Every window of every reading, computed directly.
fn direct(rows: &[(String, String, i64, f64)], size: i64, hop: i64) -> Windows {
    let mut members: BTreeMap<(String, String, i64), Vec<(i64, f64)>> = BTreeMap::new();
    for (d, t, ts, v) in rows {
        let mut start = ts.div_euclid(hop) * hop;
        while start > ts - size {
            members
                .entry((d.clone(), t.clone(), start))
                .or_default()
                .push((*ts, *v));
            start -= hop;
        }
    }
    members
        .into_iter()
        .map(|(k, mut rows)| {
            rows.sort_by_key(|r| r.0);
            let n = rows.len() as f64;
            let mean = rows.iter().map(|r| r.1).sum::<f64>() / n;
            let var = rows.iter().map(|r| (r.1 - mean).powi(2)).sum::<f64>() / (n - 1.0);
            let stats = Stats {
                count: rows.len() as i64,
                mean,
                min: rows.iter().map(|r| r.1).fold(f64::INFINITY, f64::min),
                max: rows.iter().map(|r| r.1).fold(f64::NEG_INFINITY, f64::max),
                std: if rows.len() > 1 { var.sqrt() } else { f64::NAN },
                first: rows[0].1,
                last: rows[rows.len() - 1].1,
            };
            let end = k.2 + size;
            (k, (end, stats))
        })
        .collect()
}

fn run(engine: &mut Engine, rows: &[(String, String, i64, f64)], partitions: u32) {
    for (i, (d, t, ts, v)) in rows.iter().enumerate() {
        let p = (d.len() as u32 + d.as_bytes()[d.len() - 1] as u32) % partitions;
        let id = engine.series_id(p, d, t);
        engine.push(id, i as u64, *ts, *v);
    }
}

fn collect(engine: &mut Engine) -> Windows {
    let (closed, _) = engine.take();
    let mut out = Windows::new();
    for c in closed {
        let (d, t) = engine.ids(c.series);
        let old = out.insert((d.to_string(), t.to_string(), c.start), (c.end, c.stats));
        assert!(old.is_none(), "window {d}/{t}@{} closed twice", c.start);
    }
    out
}

fn assert_same(got: &Windows, want: &Windows) {
    assert_eq!(got.len(), want.len(), "number of windows");
    for (k, (end, w)) in want {
        let (gend, g) = got.get(k).unwrap_or_else(|| panic!("window {k:?} missing"));
        assert_eq!(gend, end);
        assert_eq!(g.count, w.count, "{k:?}");
        for (a, b, what) in [
            (g.mean, w.mean, "mean"),
            (g.min, w.min, "min"),
            (g.max, w.max, "max"),
            (g.first, w.first, "first"),
            (g.last, w.last, "last"),
            (g.std, w.std, "std"),
        ] {
            let close = (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-12 * b.abs().max(1.0);
            assert!(close, "{k:?} {what}: {a} vs {b}");
        }
    }
}

fn config(size: i64, hop: i64, delay: i64) -> Config {
    Config {
        size_ms: size,
        hop_ms: hop,
        delay_ms: delay,
        ..Config::default()
    }
}

#[test]
fn tumbling_windows_equal_a_direct_computation() {
    // Out of order by up to 4 s, with a delay of 5 s: nothing is late.
    let rows = readings(30, 600, 4_000, 7);
    let mut engine = Engine::new(config(60_000, 60_000, 5_000), 4).unwrap();
    run(&mut engine, &rows, 4);
    let mut got = collect(&mut engine);
    let c = engine.counters();
    assert_eq!((c.late, c.repeats, c.nan), (0, 0, 0));
    assert!(got.len() > 200, "windows close as the watermark passes");
    for p in 0..4 {
        engine.advance(p, i64::MAX);
    }
    got.extend(collect(&mut engine));
    assert_same(&got, &direct(&rows, 60_000, 60_000));
    assert_eq!(engine.buffered(), 0);
}

#[test]
fn hopping_windows_equal_a_direct_computation() {
    let rows = readings(9, 400, 2_000, 11);
    let mut engine = Engine::new(config(60_000, 15_000, 3_000), 2).unwrap();
    run(&mut engine, &rows, 2);
    for p in 0..2 {
        engine.advance(p, i64::MAX);
    }
    assert_same(&collect(&mut engine), &direct(&rows, 60_000, 15_000));
    assert_eq!(engine.counters().late, 0);
}

#[test]
fn late_readings_are_kept_apart_and_counted() {
    let mut engine = Engine::new(config(60_000, 60_000, 0), 1).unwrap();
    let id = engine.series_id(0, "d", "t");
    engine.push(id, 0, T0 + 1_000, 1.0);
    engine.push(id, 1, T0 + 61_000, 2.0); // the watermark passes the first window's end
    engine.push(id, 2, T0 + 2_000, 3.0); // late: its window closed
    let (closed, late) = engine.take();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].stats.count, 1);
    assert_eq!(closed[0].stats.mean, 1.0);
    assert_eq!(late.len(), 1);
    assert_eq!(
        (late[0].offset, late[0].ts, late[0].value),
        (2, T0 + 2_000, 3.0)
    );
    assert_eq!(late[0].watermark, T0 + 61_000);
    assert_eq!(engine.counters().late, 1);
    // Allowed lateness keeps a window open longer.
    let mut engine = Engine::new(
        Config {
            lateness_ms: 5_000,
            ..config(60_000, 60_000, 0)
        },
        1,
    )
    .unwrap();
    let id = engine.series_id(0, "d", "t");
    engine.push(id, 0, T0 + 1_000, 1.0);
    engine.push(id, 1, T0 + 61_000, 2.0);
    engine.push(id, 2, T0 + 2_000, 3.0);
    assert!(engine.take().0.is_empty());
    engine.push(id, 3, T0 + 65_000, 4.0);
    let (closed, late) = engine.take();
    assert_eq!((closed.len(), late.len()), (1, 0));
    assert_eq!(closed[0].stats.count, 2);
    assert_eq!(closed[0].stats.first, 1.0);
    assert_eq!(closed[0].stats.last, 3.0);
}

#[test]
fn filters_drop_nan_out_of_range_and_repeats() {
    let mut c = config(60_000, 60_000, 0);
    c.filters.ranges.insert(
        "temp".into(),
        Range {
            min: -40.0,
            max: 125.0,
        },
    );
    let mut engine = Engine::new(c, 1).unwrap();
    let id = engine.series_id(0, "d", "temp");
    engine.push(id, 0, T0 + 1_000, 20.0);
    engine.push(id, 1, T0 + 1_000, 99.0); // a repeat of (d, temp, ts): the first stays
    engine.push(id, 2, T0 + 2_000, f64::NAN);
    engine.push(id, 3, T0 + 3_000, 500.0);
    engine.push(id, 4, T0 + 4_000, 22.0);
    engine.advance(0, i64::MAX);
    let (closed, _) = engine.take();
    assert_eq!(closed.len(), 1);
    let s = closed[0].stats;
    assert_eq!((s.count, s.mean, s.first, s.last), (2, 21.0, 20.0, 22.0));
    let c = engine.counters();
    assert_eq!((c.readings, c.repeats, c.nan, c.out_of_range), (5, 1, 1, 1));
    // Kept when asked: the repeat and the NaN count in the window.
    let mut c = config(60_000, 60_000, 0);
    c.filters.drop_nan = false;
    c.filters.drop_repeats = false;
    let mut engine = Engine::new(c, 1).unwrap();
    let id = engine.series_id(0, "d", "temp");
    engine.push(id, 0, T0 + 1_000, 20.0);
    engine.push(id, 1, T0 + 1_000, 99.0);
    engine.push(id, 2, T0 + 2_000, f64::NAN);
    engine.advance(0, i64::MAX);
    let (closed, _) = engine.take();
    let s = closed[0].stats;
    assert_eq!((s.count, s.first, s.min, s.max), (3, 20.0, 20.0, 99.0));
    assert!(s.mean.is_nan() && s.last.is_nan());
    let c = engine.counters();
    assert_eq!((c.repeats, c.nan), (0, 0));
    assert!(Engine::new(config(60_000, 70_000, 0), 1).is_err());
    assert!(Engine::new(config(0, 0, 0), 1).is_err());
}

#[test]
fn a_restored_snapshot_goes_on_exactly_as_the_original() {
    let rows = readings(12, 300, 3_000, 3);
    let cfg = config(30_000, 10_000, 4_000);
    let mut whole = Engine::new(cfg.clone(), 3).unwrap();
    run(&mut whole, &rows, 3);
    for p in 0..3 {
        whole.advance(p, i64::MAX);
    }
    let want = collect(&mut whole);
    for cut in [1, rows.len() / 3, rows.len() - 1] {
        let mut first = Engine::new(cfg.clone(), 3).unwrap();
        run(&mut first, &rows[..cut], 3);
        let mut got = collect(&mut first);
        let mut second = Engine::restore(cfg.clone(), &first.snapshot()).unwrap();
        assert_eq!(second.counters(), first.counters());
        // Series are created again on restore; feeding the rest by name continues them.
        for (i, (d, t, ts, v)) in rows[cut..].iter().enumerate() {
            let p = (d.len() as u32 + d.as_bytes()[d.len() - 1] as u32) % 3;
            let id = second.series_id(p, d, t);
            second.push(id, (cut + i) as u64, *ts, *v);
        }
        for p in 0..3 {
            second.advance(p, i64::MAX);
        }
        for (k, v) in collect(&mut second) {
            assert!(got.insert(k.clone(), v).is_none(), "{k:?} twice");
        }
        assert_eq!(got.len(), want.len());
        for (k, (end, s)) in &want {
            let (gend, g) = &got[k];
            assert_eq!(gend, end);
            assert_eq!(g.count, s.count);
            assert_eq!(g.mean.to_bits(), s.mean.to_bits(), "{k:?}");
            assert_eq!(g.std.to_bits(), s.std.to_bits(), "{k:?}");
        }
    }
    // A damaged snapshot is refused with a reason.
    let snap = whole.snapshot();
    let err = Engine::restore(cfg, &snap[..snap.len() - 3]).err().unwrap();
    assert!(err.to_string().contains("aggregation state"), "{err}");
}

#[test]
fn records_that_are_not_readings_are_refused_by_offset() {
    let mut engine = Engine::new(Config::default(), 2).unwrap();
    let err = engine.push_record(1, 42, b"\x05\x00ab").unwrap_err();
    assert!(err.to_string().contains("partition 1, offset 42"), "{err}");
    assert_eq!(engine.counters().readings, 0);
}
