//! The TLS + SASL gate of the Kafka tests as a process, for `scripts/bench/tls.py`: relays to a
//! plaintext broker (tansu), with TLS and SASL, or (`--plaintext`) without, and prints its port.
//!
//!     cargo run --release -p fleetscore --example kafka_gate -- --upstream 127.0.0.1:9092 \
//!         --cert server.pem --key server.key --user fleet    # password: KAFKA_GATE_PASSWORD
//!     cargo run --release -p fleetscore --example kafka_gate -- --upstream 127.0.0.1:9092 --plaintext

#[path = "../tests/support/kafka_gate.rs"]
mod kafka_gate;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut upstream, mut cert, mut key, mut user, mut plaintext) =
        (None, None, None, String::new(), false);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--upstream" => upstream = Some(value()),
            "--cert" => cert = Some(value()),
            "--key" => key = Some(value()),
            "--user" => user = value(),
            "--plaintext" => plaintext = true,
            other => panic!("unknown option {other}"),
        }
    }
    let identity = (!plaintext).then(|| fleetscore_tls::Identity {
        cert: cert.expect("--cert").into(),
        key: key.expect("--key").into(),
    });
    let password = std::env::var("KAFKA_GATE_PASSWORD").unwrap_or_default();
    let gate = kafka_gate::start(
        identity.as_ref(),
        upstream.expect("--upstream"),
        &user,
        &password,
        0,
    );
    println!("{}", gate.port);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
        let connections = gate.sni.lock().map(|s| s.len()).unwrap_or(0);
        let commits = gate.commits.lock().map(|c| c.len()).unwrap_or(0);
        let fetches = gate.fetches.lock().map(|f| f.len()).unwrap_or(0);
        eprintln!(
            "kafka_gate: {connections} TLS connection(s), {fetches} fetch(es), {commits} offset commit(s) so far"
        );
    }
}
