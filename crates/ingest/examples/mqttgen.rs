//! An MQTT load generator for the ingest benchmark: publishers each send their share of N
//! readings as QoS 1 messages (one reading per message) to `sensors/dev{k}/t`, with a window
//! of messages in flight, and wait until the broker acknowledged every one; prints one JSON
//! line. (`mosquitto_pub -l` drops lines under load, so it cannot be the generator.)
//!
//!     cargo run --release -p fleetscore-ingest --example mqttgen -- \
//!         --port 1883 --messages 400000 --publishers 4 --inflight 1000

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

fn main() {
    let mut port = 1883u16;
    let mut messages = 400_000usize;
    let mut publishers = 4usize;
    let mut inflight = 1000u16;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => port = value.parse().expect("--port N"),
            "--messages" => messages = value.parse().expect("--messages N"),
            "--publishers" => publishers = value.parse().expect("--publishers N"),
            "--inflight" => inflight = value.parse().expect("--inflight N"),
            other => panic!("unknown option {other}"),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..publishers)
            .map(|k| {
                let share = messages / publishers + usize::from(k < messages % publishers);
                tokio::spawn(publish(port, k, share, inflight))
            })
            .collect();
        for t in tasks {
            t.await.expect("publisher");
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"messages\":{messages},\"publishers\":{publishers},\"inflight\":{inflight},\"seconds\":{seconds:.3},\"messages_per_second\":{:.0}}}",
        messages as f64 / seconds
    );
}

async fn publish(port: u16, k: usize, count: usize, inflight: u16) {
    let mut options = MqttOptions::new(
        format!("mqttgen-{k}-{}", std::process::id()),
        "127.0.0.1",
        port,
    );
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(inflight)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(options, inflight as usize);
    let topic = format!("sensors/dev{k:05}/t");
    let sender = tokio::spawn(async move {
        let base: i64 = 1_767_225_600_000;
        for i in 0..count as i64 {
            let payload = format!(
                "{{\"ts\":{},\"value\":{}.{}}}",
                base + i,
                (i % 97) - 40,
                i % 100
            );
            client
                .publish(topic.as_str(), QoS::AtLeastOnce, false, payload)
                .await
                .expect("queue a publish");
        }
        client
    });
    let mut acked = 0usize;
    while acked < count {
        match events.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            // The broker dropped the connection: polling again reconnects, and rumqttc sends
            // the messages not yet acknowledged again (so a subscriber may see repeats).
            Err(e) => {
                eprintln!("publisher {k}: {e}; reconnecting");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let client = sender.await.expect("sender");
    let _ = client.disconnect().await;
}
