//! Request bodies to readings: JSON lines, a JSON object or array, or CSV with a header. Each
//! record is checked on its own; a bad one is refused with its line (or index) and the reason,
//! and the others go on.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Visitor};

use crate::reading::{Invalid, Limits, Reading, parse_ts};
use fleetscore_core::check_time;

/// A body format, from the request's `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (`application/x-ndjson`, `application/jsonl`).
    JsonLines,
    /// One JSON object, or an array of them (`application/json`).
    Json,
    /// CSV with a header naming `device`, `tag`, `ts`, `value` in any order and case
    /// (`text/csv`).
    Csv,
}

impl Format {
    /// The format a `Content-Type` names.
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/x-ndjson"
            | "application/jsonl"
            | "application/jsonlines"
            | "application/x-jsonlines" => Some(Format::JsonLines),
            "application/json" => Some(Format::Json),
            "text/csv" | "application/csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// Where a refused record was in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// 1-based line (JSON lines; CSV, where the header is line 1).
    Line(usize),
    /// 0-based position in a JSON array (0 for a single object).
    Index(usize),
}

/// A refused record.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Where it was.
    pub at: At,
    /// Why.
    pub error: String,
}

/// What a body held.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Valid readings, in body order.
    pub readings: Vec<Reading>,
    /// Refused records, in body order.
    pub rejected: Vec<Rejected>,
}

/// What a reading must satisfy beyond its own checks: e.g. a token's device scope.
pub trait Admit {
    /// `Err` with the reason if `device` may not be written.
    fn device(&self, device: &str) -> Result<(), Invalid>;
}

/// Admits every device.
pub struct AnyDevice;

impl Admit for AnyDevice {
    fn device(&self, _: &str) -> Result<(), Invalid> {
        Ok(())
    }
}

/// A reading in JSON is an object: serde would also take an array as the fields in order
/// (`["d1", "t", 1767225605000, 1.5]`), which no one means to send and no field names check.
fn object_only(json: &[u8]) -> Result<(), Invalid> {
    match json.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => Ok(()),
        Some(b'[') => Err(Invalid(
            "a reading is a JSON object ({\"device\": …, \"tag\": …, \"ts\": …, \"value\": …}), not an array".into(),
        )),
        Some(_) => Ok(()),
    }
}

/// Parses and checks a body.
pub fn parse(
    body: &[u8],
    format: Format,
    limits: &Limits,
    now_ms: i64,
    admit: &dyn Admit,
) -> Parsed {
    let mut out = Checker {
        parsed: Parsed::default(),
        valid_at: Vec::new(),
        limits,
        now_ms,
        admit,
    };
    match format {
        Format::JsonLines => {
            for (i, line) in body.split(|&b| b == b'\n').enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let r = object_only(line)
                    .and_then(|()| {
                        serde_json::from_slice::<Json<'_>>(line).map_err(|e| json_error(&e))
                    })
                    .and_then(Json::reading);
                out.add(At::Line(i + 1), r);
            }
        }
        Format::Json => {
            let not_json = |e: serde_json::Error| {
                if e.is_data() {
                    // Valid JSON, but not a reading: say what the reading lacks.
                    json_error(&e)
                } else {
                    Invalid(format!(
                        "the body is not a JSON object or array of objects: {}",
                        json_error(&e)
                    ))
                }
            };
            if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
                // Each element on its own, so one bad element does not refuse the others.
                match serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(body) {
                    Ok(items) => {
                        for (i, item) in items.iter().enumerate() {
                            let r = object_only(item.get().as_bytes())
                                .and_then(|()| {
                                    serde_json::from_str::<Json<'_>>(item.get())
                                        .map_err(|e| json_error(&e))
                                })
                                .and_then(Json::reading);
                            out.add(At::Index(i), r);
                        }
                    }
                    Err(e) => out.add(At::Index(0), Err(not_json(e))),
                }
            } else {
                let r = serde_json::from_slice::<Json<'_>>(body)
                    .map_err(not_json)
                    .and_then(Json::reading);
                out.add(At::Index(0), r);
            }
        }
        Format::Csv => parse_csv(body, &mut out),
    }
    out.refuse_repeats();
    out.parsed
}

struct Checker<'a> {
    parsed: Parsed,
    /// Where each valid reading was.
    valid_at: Vec<At>,
    limits: &'a Limits,
    now_ms: i64,
    admit: &'a dyn Admit,
}

impl Checker<'_> {
    fn add(&mut self, at: At, r: Result<Reading, Invalid>) {
        let checked = r.and_then(|r| {
            r.check(self.limits, self.now_ms)?;
            self.admit.device(&r.device)?;
            Ok(r)
        });
        match checked {
            Ok(r) => {
                self.parsed.readings.push(r);
                self.valid_at.push(at);
            }
            Err(e) => self.parsed.rejected.push(Rejected { at, error: e.0 }),
        }
    }

    /// Refuses every repeat of an earlier reading's (device, tag, ts): sorting positions by key
    /// finds them without hashing or copying an id per reading.
    fn refuse_repeats(&mut self) {
        let readings = &self.parsed.readings;
        let mut order: Vec<u32> = (0..readings.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| {
            let (x, y) = (&readings[a as usize], &readings[b as usize]);
            (x.ts_ms, &x.device, &x.tag, a).cmp(&(y.ts_ms, &y.device, &y.tag, b))
        });
        let same =
            |a: &Reading, b: &Reading| a.ts_ms == b.ts_ms && a.device == b.device && a.tag == b.tag;
        let mut repeat = vec![false; readings.len()];
        for w in order.windows(2) {
            if same(&readings[w[0] as usize], &readings[w[1] as usize]) {
                repeat[w[1] as usize] = true;
            }
        }
        if !repeat.contains(&true) {
            return;
        }
        let readings = std::mem::take(&mut self.parsed.readings);
        let at = std::mem::take(&mut self.valid_at);
        for ((r, at), repeat) in readings.into_iter().zip(at).zip(repeat) {
            if repeat {
                self.parsed.rejected.push(Rejected {
                    at,
                    error: format!(
                        "repeats device {:?}, tag {:?} at the same `ts` as an earlier record of this request",
                        r.device, r.tag
                    ),
                });
            } else {
                self.parsed.readings.push(r);
                self.valid_at.push(at);
            }
        }
        // Refusals in body order.
        self.parsed.rejected.sort_by_key(|r| match r.at {
            At::Line(l) | At::Index(l) => l,
        });
    }
}

fn json_error(e: &serde_json::Error) -> Invalid {
    // serde_json's messages end with "at line 1 column N"; the line is ours to report.
    let m = e.to_string();
    let m = match m.rfind(" at line ") {
        Some(i) => format!("{} (column {})", &m[..i], e.column()),
        None => m,
    };
    Invalid(m)
}

/// One reading as JSON: `{"device": "d1", "tag": "t", "ts": "2026-…Z" | 1767225605000,
/// "value": 3.5}`. Ids may be JSON numbers (as in the reference data); other fields are
/// ignored.
#[derive(Deserialize)]
struct Json<'a> {
    #[serde(borrow)]
    device: Id<'a>,
    #[serde(borrow)]
    tag: Id<'a>,
    #[serde(borrow)]
    ts: Ts<'a>,
    value: f64,
}

impl Json<'_> {
    fn reading(self) -> Result<Reading, Invalid> {
        Ok(Reading {
            device: self.device.0.into_owned(),
            tag: self.tag.0.into_owned(),
            ts_ms: match self.ts {
                Ts::Ms(ms) => ms,
                Ts::Text(t) => parse_ts(&t)?,
            },
            value: self.value,
        })
    }
}

struct Id<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Id<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Id<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an integer id")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Id<'de>, E> {
                Ok(Id(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id<'de>, E> {
                Ok(Id(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Id<'de>, E> {
                Ok(Id(Cow::Owned(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id<'de>, E> {
                Ok(Id(Cow::Owned(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id<'de>, E> {
                Ok(Id(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_any(V)
    }
}

enum Ts<'a> {
    Ms(i64),
    Text(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Ts<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ts<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("RFC 3339 text or an integer of epoch milliseconds")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Ts<'de>, E> {
                Ok(Ts::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Ts<'de>, E> {
                Ok(Ts::Text(Cow::Owned(v.to_string())))
            }
            // Numbers get the range check and message every other time gets
            // (`fleetscore_core::time`), quoting a huge one in exponent form, never in full.
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ts<'de>, E> {
                // Past i64 is past year 9999: quoted as the number it was.
                i64::try_from(v)
                    .map_err(|_| fleetscore_core::TimeError::OutOfRange(v.to_string()))
                    .and_then(check_time)
                    .map(Ts::Ms)
                    .map_err(|e| E::custom(format!("`ts` {e}")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ts<'de>, E> {
                check_time(v)
                    .map(Ts::Ms)
                    .map_err(|e| E::custom(format!("`ts` {e}")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Ts<'de>, E> {
                if v.fract() == 0.0 && v.abs() < 9e15 {
                    self.visit_i64(v as i64)
                } else if v.fract() == 0.0 || !v.is_finite() {
                    Err(E::custom(format!(
                        "`ts` {}",
                        fleetscore_core::TimeError::OutOfRange(format!("{v:e}"))
                    )))
                } else {
                    Err(E::custom(format!(
                        "`ts` {v} is not a whole number of milliseconds"
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

fn parse_csv(body: &[u8], out: &mut Checker<'_>) {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(body);
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            out.add(
                At::Line(1),
                Err(Invalid(format!("unreadable CSV header: {e}"))),
            );
            return;
        }
    };
    let find = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let columns = ["device", "tag", "ts", "value"].map(find);
    if columns.iter().any(Option::is_none) {
        out.add(
            At::Line(1),
            Err(Invalid(format!(
                "the CSV header must name device, tag, ts and value (it has: {})",
                headers.iter().collect::<Vec<_>>().join(",")
            ))),
        );
        return;
    }
    let [device, tag, ts, value] = columns.map(|c| c.expect("checked"));
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line() as usize;
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                if record.iter().all(|f| f.trim().is_empty()) {
                    continue;
                }
                let field = |i: usize, name: &str| {
                    record
                        .get(i)
                        .ok_or_else(|| Invalid(format!("no `{name}` field")))
                };
                let r = (|| {
                    let v = field(value, "value")?.trim();
                    Ok(Reading {
                        device: field(device, "device")?.trim().to_string(),
                        tag: field(tag, "tag")?.trim().to_string(),
                        ts_ms: parse_ts(field(ts, "ts")?)?,
                        value: v
                            .parse::<f64>()
                            .map_err(|_| Invalid(format!("`value` {v:?} is not a number")))?,
                    })
                })();
                out.add(At::Line(line), r);
            }
            Err(e) => out.add(At::Line(line), Err(Invalid(format!("bad CSV record: {e}")))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600_000;

    fn run(body: &str, format: Format) -> Parsed {
        parse(body.as_bytes(), format, &Limits::default(), NOW, &AnyDevice)
    }

    #[test]
    fn json_lines_keep_good_lines_and_name_bad_ones() {
        let body = concat!(
            r#"{"device":"d1","tag":"t","ts":"2026-01-01T00:00:05Z","value":1.5}"#,
            "\n",
            "\n",
            r#"{"device":"d1","tag":"t","ts":1767225610000,"value":2}"#,
            "\r\n",
            r#"{"device":"d1","tag":"t","ts":1767225615000}"#,
            "\n",
            r#"{"device":"d1","tag":"t","ts":1767225620000,"value":"NaN"}"#,
            "\n",
            r#"{"device":2,"tag":3,"ts":1767225625000,"value":1e400}"#,
            "\n",
            "not json\n",
            r#"{"device":"d1","tag":"t","ts":"2026-01-01T00:00:05Z","value":9}"#,
            "\n",
            r#"{"device":"d1","tag":"t","ts":"later","value":9}"#,
        );
        let p = run(body, Format::JsonLines);
        assert_eq!(p.readings.len(), 2);
        assert_eq!(p.readings[1].ts_ms, 1_767_225_610_000);
        let errors: Vec<(At, &str)> = p
            .rejected
            .iter()
            .map(|r| (r.at, r.error.as_str()))
            .collect();
        assert_eq!(errors.len(), 6, "{errors:?}");
        assert_eq!(errors[0].0, At::Line(4));
        assert!(
            errors[0].1.contains("missing field `value`"),
            "{}",
            errors[0].1
        );
        assert!(
            errors[1].1.contains("invalid type: string \"NaN\""),
            "{}",
            errors[1].1
        );
        assert_eq!(errors[2].0, At::Line(6));
        assert!(
            errors[3].1.contains("expected ident") || errors[3].1.contains("expected value"),
            "{}",
            errors[3].1
        );
        assert!(
            errors[4].1.contains("repeats device \"d1\""),
            "{}",
            errors[4].1
        );
        assert!(errors[5].1.contains("neither RFC 3339"), "{}", errors[5].1);
    }

    #[test]
    fn times_out_of_range_get_the_one_message_and_are_not_echoed_whole() {
        let huge = "9".repeat(301);
        for ts in [
            huge.clone(),
            format!("\"{huge}\""),
            "253402300800000".into(),
        ] {
            let body = format!(r#"{{"device":"d","tag":"t","ts":{ts},"value":1}}"#);
            let p = parse(
                body.as_bytes(),
                Format::JsonLines,
                &Limits::default(),
                0,
                &AnyDevice,
            );
            let e = &p.rejected[0].error;
            assert!(
                e.contains("outside the supported range, years 1 to 9999"),
                "{e}"
            );
            assert!(e.len() < 300, "{e}");
        }
    }

    #[test]
    fn a_reading_that_is_a_json_array_is_refused_in_lines_and_arrays() {
        let line = br#"["d1", "t", 1767225605000, 1.5]"#;
        for (body, format) in [
            (line.to_vec(), Format::JsonLines),
            ([b"[".as_slice(), line, b"]"].concat(), Format::Json),
        ] {
            let p = parse(
                &body,
                format,
                &Limits::default(),
                1_767_225_600_000,
                &AnyDevice,
            );
            assert!(p.readings.is_empty(), "{format:?}");
            assert!(
                p.rejected[0].error.contains("not an array"),
                "{:?}",
                p.rejected
            );
        }
    }

    #[test]
    fn json_takes_one_object_or_an_array() {
        let one = run(
            r#"{"device":"d","tag":"t","ts":1767225605000,"value":1}"#,
            Format::Json,
        );
        assert_eq!(one.readings.len(), 1);
        let many = run(
            r#"[{"device":"d","tag":"t","ts":1767225605000,"value":1},{"device":"d"},{"device":"d","tag":"t","ts":1767225606000,"value":-1}]"#,
            Format::Json,
        );
        assert_eq!(many.readings.len(), 2);
        assert_eq!(many.rejected[0].at, At::Index(1));
        let broken = run("[{", Format::Json);
        assert!(
            broken.rejected[0]
                .error
                .contains("not a JSON object or array")
        );
    }

    #[test]
    fn csv_needs_the_four_columns_in_any_order_and_case() {
        let p = run(
            "TS,Device,Tag,Value\n2026-01-01 00:00:05,1,1,3.5\n2026-01-01T00:00:10Z,1,1,x\n1767225615000,1,1\n",
            Format::Csv,
        );
        assert_eq!(p.readings.len(), 1);
        assert_eq!(p.readings[0].device, "1");
        assert_eq!(p.readings[0].ts_ms, 1_767_225_605_000);
        assert_eq!(p.rejected[0].at, At::Line(3));
        assert!(
            p.rejected[0]
                .error
                .contains("`value` \"x\" is not a number")
        );
        assert_eq!(p.rejected[1].at, At::Line(4));
        assert!(p.rejected[1].error.contains("no `value` field"));
        let p = run("time,device\n", Format::Csv);
        assert!(
            p.rejected[0]
                .error
                .contains("must name device, tag, ts and value")
        );
    }

    #[test]
    fn a_device_outside_the_scope_is_refused() {
        struct Only;
        impl Admit for Only {
            fn device(&self, d: &str) -> Result<(), Invalid> {
                if d == "mine" {
                    Ok(())
                } else {
                    Err(Invalid(format!(
                        "device {d:?} is not allowed for this token"
                    )))
                }
            }
        }
        let body = "device,tag,ts,value\nmine,t,1767225605000,1\nyours,t,1767225605000,1\n";
        let p = parse(body.as_bytes(), Format::Csv, &Limits::default(), NOW, &Only);
        assert_eq!(p.readings.len(), 1);
        assert!(p.rejected[0].error.contains("\"yours\" is not allowed"));
    }

    #[test]
    fn content_types_choose_the_format() {
        assert_eq!(
            Format::from_content_type("application/x-ndjson"),
            Some(Format::JsonLines)
        );
        assert_eq!(
            Format::from_content_type("application/json; charset=utf-8"),
            Some(Format::Json)
        );
        assert_eq!(Format::from_content_type("Text/CSV"), Some(Format::Csv));
        assert_eq!(Format::from_content_type("text/plain"), None);
    }
}
