//! `fleetscore ingest serve` as a real process on loopback: what each kind of request gets,
//! and that a SIGKILL under load loses no acknowledged reading.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::tempdir;
#[path = "support/kafka_gate.rs"]
mod kafka_gate;
use common::{Broker, bin, free_port, post, publish, request, serve, start_broker};

/// `fleetscore log read` of the whole log: (device, tag, ts, value) per record.
fn log_contents(log_dir: &Path) -> Vec<(String, String, i64, f64)> {
    let o = bin()
        .args(["log", "read", "--log-dir"])
        .arg(log_dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["device"].as_str().unwrap().to_string(),
                v["tag"].as_str().unwrap().to_string(),
                v["ts"].as_i64().unwrap(),
                v["value"].as_f64().unwrap(),
            )
        })
        .collect()
}

const TOKEN: &str = "site-a-0123456789abcdef";
const SCOPED: &str = "site-b-0123456789abcdef";

#[test]
fn every_kind_of_request_gets_a_clear_answer_and_only_valid_readings_are_kept() {
    let dir = tempdir("requests");
    let tokens = dir.join("tokens.json");
    std::fs::write(
        &tokens,
        format!(
            r#"{{"tokens": [{{"name": "a", "token": "{TOKEN}"}}, {{"name": "b", "token": "{SCOPED}", "devices": ["b1"]}}]}}"#
        ),
    )
    .unwrap();
    let log_dir = dir.join("log");
    let server = serve(
        &log_dir,
        &[
            "--tokens",
            tokens.to_str().unwrap(),
            "--partitions",
            "4",
            "--max-body",
            "4000",
        ],
    );
    let addr = server.addr;
    let line = |d: &str, ts: &str, v: &str| {
        format!(r#"{{"device":"{d}","tag":"t","ts":{ts},"value":{v}}}"#)
    };

    // No token, a wrong token.
    let (s, body) = post(
        addr,
        "application/x-ndjson",
        None,
        &line("d1", "1767225605000", "1"),
    );
    assert_eq!(s, 401);
    assert!(
        body["error"].as_str().unwrap().contains("bearer token"),
        "{body}"
    );
    let (s, body) = post(addr, "application/x-ndjson", Some("wrong-token-000000"), "");
    assert_eq!(s, 401);
    assert_eq!(body["error"], "unknown bearer token");

    // A format it does not take; a body over the limit.
    let (s, body) = post(addr, "text/plain", Some(TOKEN), "d1 t 1 2");
    assert_eq!(s, 415);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("application/x-ndjson"),
        "{body}"
    );
    let (s, body) = post(addr, "application/x-ndjson", Some(TOKEN), &"x".repeat(5000));
    assert_eq!(s, 413);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("larger than 4000 bytes"),
        "{body}"
    );

    // Good and bad lines together: the good ones are kept, each bad one named.
    let body = [
        line("d1", "1767225605000", "1.5"),
        line("d1", "\"2026-01-01T00:00:10Z\"", "2.5"),
        line("d1", "1767225615000", "\"NaN\""),
        line("d2", "99999999999999", "1"),
        "{broken".to_string(),
        line("d1", "1767225605000", "7"),
        line("", "1767225620000", "1"),
    ]
    .join("\n");
    let (s, r) = post(addr, "application/x-ndjson", Some(TOKEN), &body);
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["accepted"], 2);
    assert_eq!(r["rejected_count"], 5);
    let lines: Vec<u64> = r["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [3, 4, 5, 6, 7]);
    let reasons = r["rejected"].to_string();
    for want in [
        "invalid type: string \\\"NaN\\\"",
        "ahead of the server's clock",
        "repeats device",
        "`device` is empty",
    ] {
        assert!(reasons.contains(want), "{want} not in {reasons}");
    }

    // Nothing valid: 400. CSV and JSON arrays go the same way.
    let (s, r) = post(
        addr,
        "application/x-ndjson",
        Some(TOKEN),
        &line("d1", "1", "1"),
    );
    assert_eq!(s, 400);
    assert!(
        r["rejected"][0]["error"]
            .as_str()
            .unwrap()
            .contains("before 2000-01-01")
    );
    let (s, r) = post(
        addr,
        "text/csv",
        Some(TOKEN),
        "TS,Device,Tag,Value\n2026-01-01 00:00:20,3,7,4.25\n",
    );
    assert_eq!((s, r["accepted"].as_u64()), (200, Some(1)), "{r}");
    let (s, r) = post(
        addr,
        "application/json",
        Some(TOKEN),
        &format!(
            "[{},{{\"device\":\"d9\"}}]",
            line("d4", "1767225625000", "-1")
        ),
    );
    assert_eq!((s, r["accepted"].as_u64()), (200, Some(1)), "{r}");
    assert_eq!(r["rejected"][0]["index"], 1);
    assert!(
        r["rejected"][0]["error"]
            .as_str()
            .unwrap()
            .contains("missing field `tag`"),
        "{r}"
    );

    // A token scoped to devices writes only those.
    let body = [
        line("b1", "1767225605000", "1"),
        line("d1", "1767225630000", "1"),
    ]
    .join("\n");
    let (s, r) = post(addr, "application/x-ndjson", Some(SCOPED), &body);
    assert_eq!((s, r["accepted"].as_u64()), (200, Some(1)), "{r}");
    assert!(
        r["rejected"][0]["error"]
            .as_str()
            .unwrap()
            .contains("\"d1\" is not allowed for this token")
    );

    // Other paths and methods; stats count what happened.
    let (s, _) = request(addr, "GET", "/nope", &[], b"").unwrap();
    assert_eq!(s, 404);
    let (s, _) = request(addr, "GET", "/v1/readings", &[], b"").unwrap();
    assert_eq!(s, 405);
    let (s, stats) = request(addr, "GET", "/v1/stats", &[], b"").unwrap();
    assert_eq!(s, 200);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["accepted"], 5);
    assert_eq!(stats["unauthorized"], 2);
    assert_eq!(stats["partitions"].as_array().unwrap().len(), 4);
    drop(server);

    // The log holds exactly the accepted readings.
    let mut held = log_contents(&log_dir);
    held.sort_by(|a, b| (&a.0, a.2).cmp(&(&b.0, b.2)));
    let want = vec![
        ("3".to_string(), "7".to_string(), 1_767_225_620_000, 4.25),
        ("b1".into(), "t".into(), 1_767_225_605_000, 1.0),
        ("d1".into(), "t".into(), 1_767_225_605_000, 1.5),
        ("d1".into(), "t".into(), 1_767_225_610_000, 2.5),
        ("d4".into(), "t".into(), 1_767_225_625_000, -1.0),
    ];
    assert_eq!(held, want);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_tokens_it_listens_only_on_loopback() {
    let dir = tempdir("open");
    // A tokens file that is not one, or with a guessable token, is refused at start.
    for (text, want) in [
        ("[]", "not a tokens file"),
        (
            r#"{"tokens": [{"name": "weak", "token": "abc"}]}"#,
            "token `weak` is shorter than 16 characters",
        ),
    ] {
        let tokens = dir.join("tokens.json");
        std::fs::write(&tokens, text).unwrap();
        let o = bin()
            .args(["ingest", "serve", "--listen", "127.0.0.1:0", "--tokens"])
            .arg(&tokens)
            .arg("--log-dir")
            .arg(dir.join("log"))
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{err}");
    }
    let o = bin()
        .args(["ingest", "serve", "--listen", "0.0.0.0:0", "--log-dir"])
        .arg(dir.join("log"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("without tokens"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sigkill_under_load_loses_no_acknowledged_reading() {
    let dir = tempdir("sigkill");
    let log_dir = dir.join("log");
    let server = serve(&log_dir, &["--partitions", "4"]);
    let addr = server.addr;
    let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let acked = acked.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seq = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    // 250 readings per request over 5 devices of this client.
                    let batch: Vec<(String, i64)> = (0..250)
                        .map(|i| (format!("c{c}-d{}", i % 5), 1_767_225_600_000 + seq + i))
                        .collect();
                    seq += 250;
                    let body: String = batch
                        .iter()
                        .map(|(d, ts)| {
                            format!(
                                "{{\"device\":\"{d}\",\"tag\":\"v\",\"ts\":{ts},\"value\":{}}}\n",
                                ts % 1000
                            )
                        })
                        .collect();
                    let headers = [("Content-Type", "application/x-ndjson")];
                    match request(addr, "POST", "/v1/readings", &headers, body.as_bytes()) {
                        Ok((200, _)) => acked.lock().unwrap().extend(batch),
                        Ok((status, text)) => panic!("{status}: {text}"),
                        // The server was killed: this request is unacknowledged.
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    // Let load build up, then kill the server mid-stream.
    let started = Instant::now();
    while acked.lock().unwrap().len() < 20_000 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(server); // SIGKILL
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 1_000,
        "only {} readings acknowledged",
        acked.len()
    );

    // Restarting recovers the log (cutting any torn tail) and appends after it.
    let server = serve(&log_dir, &[]);
    let (s, r) = post(
        server.addr,
        "application/x-ndjson",
        None,
        r#"{"device":"after","tag":"v","ts":1767225600000,"value":1}"#,
    );
    assert_eq!(s, 200, "{r}");
    drop(server);

    let held = log_contents(&log_dir);
    let keys: HashSet<(String, i64)> = held.iter().map(|(d, _, ts, _)| (d.clone(), *ts)).collect();
    let lost: Vec<_> = acked.iter().filter(|k| !keys.contains(k)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged readings lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(3)]
    );
    assert!(keys.contains(&("after".to_string(), 1_767_225_600_000)));
    // Whatever else is there came from requests in flight at the kill, whole and readable.
    assert!(
        held.iter()
            .filter(|(d, ..)| d != "after")
            .all(|(_, tag, ts, v)| tag == "v" && *v == (ts % 1000) as f64)
    );
    eprintln!(
        "{} readings acknowledged before the SIGKILL, {} held after restart",
        acked.len(),
        held.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A broker process (Mosquitto, tansu) on a loopback port; killed when dropped.
/// The 500 readings the Kafka tests produce (device `k{i % 7}`, ts base + i) are all in the
/// log, and fewer than 300 of them twice (consumers resume from committed offsets).
fn every_produced_reading_held(held: &[(String, String, i64, f64)]) {
    let keys: HashSet<(String, i64)> = held.iter().map(|r| (r.0.clone(), r.2)).collect();
    for i in 0..500i64 {
        assert!(
            keys.contains(&(format!("k{}", i % 7), 1_767_225_600_000 + i)),
            "reading {i} lost"
        );
    }
    assert!(
        held.len() < 800,
        "{} readings held for 500 produced",
        held.len()
    );
}

fn stats(addr: SocketAddr) -> serde_json::Value {
    let (_, text) = request(addr, "GET", "/v1/stats", &[], b"").unwrap();
    serde_json::from_str(&text).unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn mqtt_readings_are_acknowledged_once_stored_across_broker_and_server_restarts() {
    let (Ok(broker_bin), Ok(pub_bin)) = (
        std::env::var("FLEETSCORE_TEST_MOSQUITTO"),
        std::env::var("FLEETSCORE_TEST_MOSQUITTO_PUB"),
    ) else {
        eprintln!("FLEETSCORE_TEST_MOSQUITTO(_PUB) not set: MQTT ingest not checked");
        return;
    };
    let dir = tempdir("mqtt");
    let log_dir = dir.join("log");
    let port = free_port();
    let mut broker = start_broker(&broker_bin, &dir.join("broker"), port);
    let mqtt = format!("mqtt://127.0.0.1:{port}");
    let client_id = format!("fleetscore-test-{}", std::process::id());
    let args = [
        "--mqtt",
        mqtt.as_str(),
        "--mqtt-client-id",
        client_id.as_str(),
    ];
    let server = serve(&log_dir, &args);
    wait_for("the MQTT connection", || {
        stats(server.addr)["mqtt"]["connected"] == true
    });

    let base = 1_767_225_600_000i64;
    let json = |from: i64, to: i64| -> Vec<String> {
        (from..to)
            .map(|i| format!(r#"{{"ts":{},"value":{i}}}"#, base + i * 1000))
            .collect()
    };
    assert!(publish(&pub_bin, port, "sensors/d1/temp", &json(0, 100)));
    assert!(publish(
        &pub_bin,
        port,
        "sensors/d2/hum",
        &["1.5".into(), "2.5".into(), "3.5".into()]
    ));
    assert!(publish(
        &pub_bin,
        port,
        "sensors/d3/bad",
        &["abc".into(), r#"{"value":"x"}"#.into(), "NaN".into()]
    ));
    wait_for("103 readings in the log", || {
        log_contents(&log_dir).len() >= 103
    });
    let s = stats(server.addr);
    assert_eq!(s["mqtt"]["accepted"], 103, "{s}");
    assert_eq!(s["mqtt"]["rejected"], 3, "{s}");

    // The broker restarts: the server reconnects, subscribes again, and goes on.
    drop(broker);
    broker = start_broker(&broker_bin, &dir.join("broker"), port);
    wait_for("a reconnect", || {
        let m = &stats(server.addr)["mqtt"];
        m["connected"] == true && m["connections"].as_u64() >= Some(2)
    });
    assert!(publish(&pub_bin, port, "sensors/d1/temp", &json(100, 150)));
    wait_for("153 readings in the log", || {
        log_contents(&log_dir).len() >= 153
    });

    // The server is killed: the broker keeps what is published meanwhile for its session, and
    // the restarted server (same client id) receives it.
    drop(server);
    std::thread::sleep(Duration::from_millis(1500)); // the broker's autosave
    assert!(publish(&pub_bin, port, "sensors/d1/temp", &json(150, 170)));
    let server = serve(&log_dir, &args);
    wait_for("173 readings in the log", || {
        log_contents(&log_dir).len() >= 173
    });
    drop(server);
    drop(broker);

    let held = log_contents(&log_dir);
    let d1: HashSet<i64> = held.iter().filter(|r| r.0 == "d1").map(|r| r.2).collect();
    assert_eq!(
        d1,
        (0..170).map(|i| base + i * 1000).collect::<HashSet<_>>()
    );
    assert!(held.iter().all(|r| r.0 != "d3"));
    let d2: Vec<f64> = held.iter().filter(|r| r.0 == "d2").map(|r| r.3).collect();
    assert_eq!(d2, [1.5, 2.5, 3.5]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_stops_the_server_after_answering_what_it_was_doing() {
    let dir = tempdir("sigterm");
    let log_dir = dir.join("log");
    let mut child = bin()
        .args(["ingest", "serve", "--listen", "127.0.0.1:0", "--log-dir"])
        .arg(&log_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap()
        .parse()
        .unwrap();
    let (s, _) = post(
        addr,
        "application/x-ndjson",
        None,
        r#"{"device":"d","tag":"t","ts":1767225600000,"value":1}"#,
    );
    assert_eq!(s, 200);
    // A client holding an idle keep-alive connection does not keep the server up.
    let idle = TcpStream::connect(addr).unwrap();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(idle);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{status}: {err}");
    assert!(err.contains("stopped: 1 readings accepted"), "{err}");
    assert_eq!(log_contents(&log_dir).len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Produces `n` readings from `from` (device k0..k6, ts 1767225600000 + i) and one record that
/// is not a reading, to topic `readings`, with kafka-python.
fn produce(python: &str, broker: &str, from: u64, n: u64) {
    let script = r#"
import sys, json
from kafka import KafkaProducer
p = KafkaProducer(bootstrap_servers=sys.argv[1], acks="all")
start, n = int(sys.argv[2]), int(sys.argv[3])
for i in range(start, start + n):
    v = {"device": f"k{i % 7}", "tag": "t", "ts": 1767225600000 + i, "value": i % 100}
    p.send("readings", json.dumps(v).encode(), key=f"k{i % 7}".encode())
p.send("readings", b"not a reading")
p.flush()
"#;
    let o = Command::new(python)
        .args(["-c", script, broker, &from.to_string(), &n.to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// tansu on `port` (the Kafka protocol, in memory), with the topic `readings` (3 partitions).
fn start_tansu(tansu: &str, port: u16) -> Broker {
    let url = format!("tcp://127.0.0.1:{port}");
    let broker = Broker {
        child: Command::new(tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu"),
    };
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "tansu did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let created = Command::new(tansu)
        .args([
            "topic",
            "create",
            "--broker",
            &url,
            "--partitions",
            "3",
            "readings",
        ])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    broker
}

#[test]
fn kafka_offsets_are_committed_only_for_stored_readings_across_a_sigkill() {
    let (Ok(tansu), Ok(python)) = (
        std::env::var("FLEETSCORE_TEST_TANSU"),
        std::env::var("FLEETSCORE_TEST_PYTHON"),
    ) else {
        eprintln!(
            "FLEETSCORE_TEST_TANSU or FLEETSCORE_TEST_PYTHON not set: Kafka ingest not checked"
        );
        return;
    };
    let dir = tempdir("kafka");
    let log_dir = dir.join("log");
    let port = free_port();
    let _kafka = start_tansu(&tansu, port);
    let broker = format!("127.0.0.1:{port}");
    produce(&python, &broker, 0, 300);

    let source = format!("kafka://127.0.0.1:{port}/readings");
    // A short session, so that the restarted server gets the killed member's partitions soon.
    let args = [
        "--kafka",
        source.as_str(),
        "--kafka-group",
        "test",
        "--kafka-session-timeout",
        "10s",
    ];
    let server = serve(&log_dir, &args);
    wait_for("300 readings from Kafka", || {
        log_contents(&log_dir).len() >= 300
    });
    let s = stats(server.addr);
    assert_eq!(s["kafka"]["partitions"], 3, "{s}");
    assert_eq!(s["kafka"]["rejected"], 1, "{s}");

    // Killed, then more is produced: the restarted server resumes from the committed offsets
    // (after the dead member's session ends and the group rebalances).
    drop(server);
    produce(&python, &broker, 300, 200);
    let server = serve(&log_dir, &args);
    wait_for("500 readings from Kafka", || {
        log_contents(&log_dir).len() >= 500
    });
    drop(server);

    // Committed offsets are per stored batch: at most what was in flight at the kill repeats.
    every_produced_reading_held(&log_contents(&log_dir));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Clients that declare large bodies and send nothing no longer lock out honest ones: body
/// bytes are charged as they arrive, and a body that does not arrive within `--body-timeout`
/// is answered 408 and its connection closed.
#[test]
fn slow_clients_cannot_lock_out_honest_ones() {
    let dir = tempdir("slow-clients");
    let server = serve(&dir.join("log"), &["--body-timeout", "2s"]);
    // 16 connections each declare 16 MiB (the whole default in-flight budget) and send nothing.
    let slow: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).unwrap();
            write!(
                s,
                "POST /v1/readings HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
                16 << 20
            )
            .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (status, body) = post(
        server.addr,
        "application/x-ndjson",
        None,
        r#"{"device":"d","tag":"t","ts":1767225600000,"value":1}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "served at once, not after the slow ones"
    );
    for mut s in slow {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("did not arrive within 2 s"), "{answer}");
    }
    let (_, stats) = request(server.addr, "GET", "/v1/stats", &[], b"").unwrap();
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(
        (stats["timed_out"].as_u64(), stats["accepted"].as_u64()),
        (Some(16), Some(1))
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// At `--max-connections`, idle connections are closed after `--idle-timeout`, so a new client
/// (and `/healthz`) is served, late but surely, instead of never.
#[test]
fn idle_connections_cannot_hold_every_slot() {
    let dir = tempdir("max-connections");
    let server = serve(
        &dir.join("log"),
        &["--max-connections", "4", "--idle-timeout", "1s"],
    );
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let (status, body) = request(server.addr, "GET", "/healthz", &[], b"").unwrap();
    assert_eq!(status, 200, "{body}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "the fifth connection waited for a slot ({waited:?})"
    );
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        assert_eq!(
            s.read_to_end(&mut rest).unwrap_or(0),
            0,
            "closed by the server"
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `mosquitto_passwd`: beside `mosquitto_pub` or the broker (Debian's mosquitto package), else
/// on PATH.
fn mosquitto_passwd(broker_bin: &str, pub_bin: &str) -> PathBuf {
    [pub_bin, broker_bin]
        .iter()
        .filter_map(|b| Path::new(b).parent())
        .chain([Path::new("/usr/bin")])
        .map(|d| d.join("mosquitto_passwd"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("mosquitto_passwd"))
}

/// Starts `ingest serve` with `args` and the MQTT password `password` in the environment;
/// returns it with the first standard-error line that contains `wanted` (or, if it exits
/// first, everything it printed; or fails the test after 30 s without either).
fn serve_until_stderr(
    log_dir: &Path,
    args: &[&str],
    password: &str,
    wanted: &'static str,
) -> (Child, String) {
    serve_with_env_until_stderr(log_dir, args, "FLEETSCORE_MQTT_PASSWORD", password, wanted)
}

/// The same, with the password in the environment variable `var`.
fn serve_with_env_until_stderr(
    log_dir: &Path,
    args: &[&str],
    var: &str,
    password: &str,
    wanted: &'static str,
) -> (Child, String) {
    let mut command = bin();
    command
        .args(["ingest", "serve", "--listen", "127.0.0.1:0", "--log-dir"])
        .arg(log_dir)
        .args(args)
        .env_remove(var)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if !password.is_empty() {
        command.env(var, password);
    }
    let mut child = command.spawn().unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            if line.contains(wanted) {
                let _ = tx.send(line);
            }
        }
        let _ = tx.send(all);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no line with {wanted:?} on standard error"));
    eprintln!("ingest serve said: {line}");
    (child, line)
}

/// `mqtts://` against Mosquitto with a TLS listener (a test CA and a leaf made here) and a
/// password file: readings stored; a wrong password and an untrusted broker are each reported
/// in one line, without the password; a client certificate is presented where the listener
/// requires one.
#[test]
fn mqtts_with_a_ca_and_a_password_stores_readings_and_refuses_clearly() {
    let (Ok(broker_bin), Ok(pub_bin)) = (
        std::env::var("FLEETSCORE_TEST_MOSQUITTO"),
        std::env::var("FLEETSCORE_TEST_MOSQUITTO_PUB"),
    ) else {
        eprintln!("FLEETSCORE_TEST_MOSQUITTO(_PUB) not set: MQTT over TLS not checked");
        return;
    };
    const PASSWORD: &str = "mqtt-test-pw-1f9e";
    let dir = tempdir("mqtts");
    let ca = fleetscore_tls::testing::TestCa::new(&dir, "mqtt");
    let other = fleetscore_tls::testing::TestCa::new(&dir, "other");
    let server = ca.localhost();
    let passwd = dir.join("passwd");
    let made = Command::new(mosquitto_passwd(&broker_bin, &pub_bin))
        .args(["-b", "-c"])
        .arg(&passwd)
        .args(["sensor", PASSWORD])
        .status()
        .unwrap();
    assert!(made.success());
    let (port, cert_port) = (free_port(), free_port());
    let tls = format!(
        "cafile {}\ncertfile {}\nkeyfile {}\n",
        ca.ca_file().display(),
        server.cert.display(),
        server.key.display()
    );
    let mut conf = format!(
        "per_listener_settings true\nlog_dest stderr\nlog_type error\n\
         listener {port} 127.0.0.1\n{tls}allow_anonymous false\npassword_file {}\n\
         listener {cert_port} 127.0.0.1\n{tls}require_certificate true\nallow_anonymous true\n",
        passwd.display()
    );
    if Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n")
    {
        conf.push_str("user root\n");
    }
    let conf_file = dir.join("mosquitto.conf");
    std::fs::write(&conf_file, conf).unwrap();
    let _broker = Broker {
        child: Command::new(&broker_bin)
            .arg("-c")
            .arg(&conf_file)
            .spawn()
            .unwrap(),
    };
    wait_for("mosquitto's TLS listeners", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
            && TcpStream::connect(("127.0.0.1", cert_port)).is_ok()
    });
    let publish_tls = |value: &str| {
        Command::new(&pub_bin)
            .args(["-h", "localhost", "-p", &port.to_string(), "--cafile"])
            .arg(ca.ca_file())
            .args(["-u", "sensor", "-P", PASSWORD, "-q", "1"])
            .args(["-t", "sensors/d1/temp", "-m", value])
            .status()
            .is_ok_and(|s| s.success())
    };

    // The right CA and password: readings stored.
    let log_dir = dir.join("log");
    let url = format!("mqtts://localhost:{port}");
    let ca_file = ca.ca_file().display().to_string();
    let good = [
        "--mqtt",
        url.as_str(),
        "--mqtt-ca",
        ca_file.as_str(),
        "--mqtt-username",
        "sensor",
        "--mqtt-client-id",
        "tls-good",
    ];
    let (server_ok, line) = serve_until_stderr(&log_dir, &good, PASSWORD, "subscribing");
    let _server_ok = Killed(server_ok);
    assert!(line.contains("connected to localhost"), "{line}");
    for v in ["1.5", "2.5", "3.5"] {
        assert!(publish_tls(v));
    }
    wait_for("3 readings in the log", || {
        log_contents(&log_dir).len() >= 3
    });

    // A wrong password.
    let mut wrong = good;
    wrong[7] = "tls-wrong";
    let (refused, line) = serve_until_stderr(
        &dir.join("log2"),
        &wrong,
        "not-the-password",
        "cannot connect",
    );
    drop(Killed(refused));
    assert!(line.contains("refused"), "{line}");
    assert!(line.contains("password"), "{line}");
    assert!(!line.contains("not-the-password"), "{line}");

    // A broker whose certificate another CA signed.
    let mut untrusted = good;
    let other_ca = other.ca_file().display().to_string();
    untrusted[3] = other_ca.as_str();
    untrusted[7] = "tls-untrusted";
    let (refused, line) =
        serve_until_stderr(&dir.join("log3"), &untrusted, PASSWORD, "cannot connect");
    drop(Killed(refused));
    assert!(line.contains("not signed by a trusted CA"), "{line}");
    assert!(!line.contains(PASSWORD), "{line}");

    // A listener that requires a client certificate: with one, connected; without, refused.
    let client = ca.client("fleetscore-ingest");
    let cert_url = format!("mqtts://localhost:{cert_port}");
    let (cert, key) = (
        client.cert.display().to_string(),
        client.key.display().to_string(),
    );
    let with_cert = [
        "--mqtt",
        cert_url.as_str(),
        "--mqtt-ca",
        ca_file.as_str(),
        "--mqtt-cert",
        cert.as_str(),
        "--mqtt-key",
        key.as_str(),
        "--mqtt-client-id",
        "tls-cert",
    ];
    let (ok, line) = serve_until_stderr(&dir.join("log4"), &with_cert, "", "subscribing");
    drop(Killed(ok));
    assert!(line.contains("connected"), "{line}");
    let (refused, line) =
        serve_until_stderr(&dir.join("log5"), &with_cert[..4], "", "cannot connect");
    drop(Killed(refused));
    assert!(line.contains("certificate"), "{line}");
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kafka over TLS and SASL, through a gate in front of tansu (`support/kafka_gate.rs`): a wrong
/// password, an unknown CA and plaintext against TLS each give a one-line reason and store
/// nothing; then SCRAM-SHA-512 and PLAIN members consume everything and commit their offsets
/// through the gate, with SNI on every connection (bootstrap, coordinator, leader), waiting
/// between fetches as long as the gate's `throttle_time_ms` asks.
#[test]
fn kafka_over_tls_and_sasl_consumes_commits_and_refuses_clearly() {
    let (Ok(tansu), Ok(python)) = (
        std::env::var("FLEETSCORE_TEST_TANSU"),
        std::env::var("FLEETSCORE_TEST_PYTHON"),
    ) else {
        eprintln!(
            "FLEETSCORE_TEST_TANSU or FLEETSCORE_TEST_PYTHON not set: Kafka over TLS not checked"
        );
        return;
    };
    const PASSWORD: &str = "kafka-test-pw-7c1d";
    // The gate asks (throttle_time_ms in every Fetch answer) for this long between fetches.
    const THROTTLE_MS: i32 = 300;
    let dir = tempdir("kafka-tls");
    let port = free_port();
    let _kafka = start_tansu(&tansu, port);
    let broker = format!("127.0.0.1:{port}");
    produce(&python, &broker, 0, 300);
    let ca = fleetscore_tls::testing::TestCa::new(&dir, "kafka");
    let other = fleetscore_tls::testing::TestCa::new(&dir, "other");
    let gate = kafka_gate::start(
        Some(&ca.localhost()),
        broker.clone(),
        "fleet",
        PASSWORD,
        THROTTLE_MS,
    );
    let tls_url = format!("kafkas://localhost:{}/readings", gate.port);
    let ca_file = ca.ca_file().display().to_string();
    let other_ca = other.ca_file().display().to_string();
    let member = |url: &str, ca: &str, mechanism: &str| -> Vec<String> {
        [
            "--kafka",
            url,
            "--kafka-ca",
            ca,
            "--kafka-sasl-mechanism",
            mechanism,
            "--kafka-username",
            "fleet",
            "--kafka-group",
            "tls",
            "--kafka-session-timeout",
            "10s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let refused = |name: &str, args: &[String], password: &str| {
        let log_dir = dir.join(name);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (child, line) = serve_with_env_until_stderr(
            &log_dir,
            &args,
            "FLEETSCORE_KAFKA_PASSWORD",
            password,
            "reconnecting",
        );
        drop(Killed(child));
        assert!(!line.contains(PASSWORD), "the password is shown: {line}");
        assert!(log_contents(&log_dir).is_empty(), "{name}: readings stored");
        line
    };

    let line = refused(
        "wrong-password",
        &member(&tls_url, &ca_file, "SCRAM-SHA-256"),
        "not-the-password",
    );
    assert!(line.contains("SASL authentication refused"), "{line}");
    assert!(!line.contains("not-the-password"), "{line}");
    let line = refused(
        "unknown-ca",
        &member(&tls_url, &other_ca, "PLAIN"),
        PASSWORD,
    );
    assert!(line.contains("not signed by a trusted CA"), "{line}");
    let mut plain = member(
        &format!("kafka://localhost:{}/readings", gate.port),
        "",
        "PLAIN",
    );
    plain.drain(2..4); // no --kafka-ca
    let line = refused("plaintext", &plain, PASSWORD);
    assert!(line.contains("does it want TLS"), "{line}");

    // The right CA and password: everything consumed, offsets committed through the gate.
    let log_dir = dir.join("log");
    let run = |mechanism: &str| {
        let args = member(&tls_url, &ca_file, mechanism);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (child, line) = serve_with_env_until_stderr(
            &log_dir,
            &args,
            "FLEETSCORE_KAFKA_PASSWORD",
            PASSWORD,
            "joined group",
        );
        assert!(line.contains("joined group tls"), "{line}");
        Killed(child)
    };
    let first = run("SCRAM-SHA-512");
    wait_for("300 readings over TLS", || {
        log_contents(&log_dir).len() >= 300
    });
    drop(first);
    produce(&python, &broker, 300, 200);
    let second = run("PLAIN");
    wait_for("500 readings over TLS", || {
        log_contents(&log_dir).len() >= 500
    });
    drop(second);
    // The second member started from the offsets the first committed through the gate.
    let held = log_contents(&log_dir);
    every_produced_reading_held(&held);
    // Offsets were committed through the gate, never twice within a second (Event Hubs
    // throttles commits; fleetscore coalesces them).
    let commits = gate.commits.lock().unwrap().clone();
    assert!(!commits.is_empty());
    for pair in commits.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(990),
            "two commits {gap:?} apart"
        );
    }
    // Every Fetch came at least the throttle time after the one before on its connection.
    let fetches = gate.fetches.lock().unwrap().clone();
    assert!(fetches.len() >= 2, "{fetches:?}");
    for (i, (connection, at)) in fetches.iter().enumerate() {
        if let Some((_, before)) = fetches[..i].iter().rev().find(|(c, _)| c == connection) {
            let gap = *at - *before;
            assert!(
                gap >= Duration::from_millis(THROTTLE_MS as u64 - 10),
                "a fetch {gap:?} after the one before, throttled for {THROTTLE_MS} ms"
            );
        }
    }
    let sni = gate.sni.lock().unwrap().clone();
    assert!(sni.len() >= 6, "{sni:?}");
    assert!(
        sni.iter().all(|n| n.as_deref() == Some("localhost")),
        "{sni:?}"
    );
}
