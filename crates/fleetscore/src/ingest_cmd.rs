//! `fleetscore ingest serve` (readings over HTTP into the durable log) and `fleetscore log ...`
//! (what the log holds).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use fleetscore_core::SystemClock;
use fleetscore_ingest::kafka::{KafkaConfig, KafkaSource, Mechanism, Sasl};
use fleetscore_ingest::mqtt::{Login, MqttConfig, MqttSource};
use fleetscore_ingest::server::{Config, HttpSource, SourceStats, Tokens};
use fleetscore_ingest::{Limits, Reading, Runner};
use fleetscore_log::{Log, Meta, Options};

/// Where the log lives.
#[derive(Debug, Args)]
pub struct LogDirArgs {
    /// The durable log's folder (a local disk: every acknowledgement waits for its fsync).
    #[arg(long, env = "FLEETSCORE_LOG_DIR", default_value = "fleetscore-log")]
    pub log_dir: PathBuf,
}

/// `fleetscore ingest ...`.
#[derive(Debug, Subcommand)]
pub enum IngestCommand {
    /// Accept readings over HTTP (POST /v1/readings: JSON lines, JSON or CSV) and append them
    /// to the durable log; a request is answered once its readings are on disk.
    Serve(Box<ServeArgs>),
}

/// `fleetscore ingest serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub log: LogDirArgs,
    /// Address to listen on (port 0 picks a free port; the chosen one is printed).
    #[arg(
        long,
        env = "FLEETSCORE_INGEST_LISTEN",
        default_value = "127.0.0.1:8086"
    )]
    pub listen: SocketAddr,
    /// Bearer tokens file: {"tokens": [{"name": "site-a", "token": "…", "devices": ["d1"]}]}.
    /// Required unless listening on a loopback address.
    #[arg(long, env = "FLEETSCORE_INGEST_TOKENS")]
    pub tokens: Option<PathBuf>,
    #[command(flatten)]
    pub tls: crate::tls_args::TlsServerArgs,
    /// Partitions of a new log (an existing log keeps its own; default 8).
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_body: usize,
    /// Request bodies held in memory at once, in bytes, before requests get 429.
    #[arg(long, default_value_t = 256 << 20)]
    pub max_inflight: usize,
    /// How long a request body may take to arrive in full before the request gets 408.
    #[arg(long, default_value = "30s", value_parser = fleetscore_core::parse_duration)]
    pub body_timeout: Duration,
    /// Most HTTP connections open at once; more wait until one closes.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// An HTTP connection idle (or sending a request's head) this long is closed.
    #[arg(long, default_value = "30s", value_parser = fleetscore_core::parse_duration)]
    pub idle_timeout: Duration,
    /// Bytes accepted but not yet on disk before requests get 429.
    #[arg(long, default_value_t = 256 << 20)]
    pub max_pending: usize,
    /// Readings further than this many seconds ahead of this machine's clock are refused.
    #[arg(long, default_value_t = 86_400)]
    pub max_future_secs: i64,
    /// A log segment is sealed at this size, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    pub segment_bytes: u64,
    /// Sealed segments older than this many hours are deleted (0 keeps them forever).
    #[arg(long, default_value_t = 168)]
    pub retention_hours: u64,
    /// Per partition, the oldest sealed segments are deleted while it holds more bytes.
    #[arg(long)]
    pub retention_bytes: Option<u64>,
    /// Also take readings from this MQTT broker (`mqtt://host[:port]`, or `mqtts://host[:port]`
    /// over TLS, port 8883 by default), QoS 1, each acknowledged once on disk.
    #[arg(long, env = "FLEETSCORE_MQTT")]
    pub mqtt: Option<String>,
    /// The CA certificates (PEM) that signed the MQTT broker's certificate (mqtts://; default:
    /// the system's).
    #[arg(long, env = "FLEETSCORE_MQTT_CA")]
    pub mqtt_ca: Option<PathBuf>,
    /// A client certificate chain (PEM) to present to the MQTT broker (mqtts://; Azure Event
    /// Grid's MQTT broker authenticates clients this way); needs --mqtt-key.
    #[arg(long, env = "FLEETSCORE_MQTT_CERT", requires = "mqtt_key")]
    pub mqtt_cert: Option<PathBuf>,
    /// The private key (PEM) of --mqtt-cert.
    #[arg(long, env = "FLEETSCORE_MQTT_KEY", requires = "mqtt_cert")]
    pub mqtt_key: Option<PathBuf>,
    /// The MQTT username. The password comes from the environment variable
    /// FLEETSCORE_MQTT_PASSWORD or from --mqtt-password-file, never from the command line.
    #[arg(long, env = "FLEETSCORE_MQTT_USERNAME")]
    pub mqtt_username: Option<String>,
    /// A file holding the MQTT password (its first line), e.g. a mounted Kubernetes Secret.
    #[arg(
        long,
        env = "FLEETSCORE_MQTT_PASSWORD_FILE",
        requires = "mqtt_username"
    )]
    pub mqtt_password_file: Option<PathBuf>,
    /// MQTT topic pattern: `{device}` and `{tag}` segments name the reading's sensor.
    #[arg(
        long,
        env = "FLEETSCORE_MQTT_TOPIC",
        default_value = "sensors/{device}/{tag}"
    )]
    pub mqtt_topic: String,
    /// MQTT client id (the broker keeps the session, and messages not yet acknowledged, under it).
    #[arg(
        long,
        env = "FLEETSCORE_MQTT_CLIENT_ID",
        default_value = "fleetscore-ingest"
    )]
    pub mqtt_client_id: String,
    /// Also consume readings from this Kafka topic (`kafka://host:port/topic`, or
    /// `kafkas://host:port/topic` over TLS, e.g. Azure Event Hubs'
    /// `kafkas://NAMESPACE.servicebus.windows.net:9093/HUB`), committing offsets only once the
    /// readings are on disk.
    #[arg(long, env = "FLEETSCORE_KAFKA")]
    pub kafka: Option<String>,
    /// The Kafka consumer group (processes in one group share the topic's partitions).
    #[arg(
        long,
        env = "FLEETSCORE_KAFKA_GROUP",
        default_value = "fleetscore-ingest"
    )]
    pub kafka_group: String,
    /// The CA certificates (PEM) that signed the Kafka brokers' certificates (kafkas://;
    /// default: the system's).
    #[arg(long, env = "FLEETSCORE_KAFKA_CA")]
    pub kafka_ca: Option<PathBuf>,
    /// SASL mechanism: PLAIN (Event Hubs), SCRAM-SHA-256 or SCRAM-SHA-512; needs
    /// --kafka-username.
    #[arg(
        long,
        env = "FLEETSCORE_KAFKA_SASL_MECHANISM",
        requires = "kafka_username"
    )]
    pub kafka_sasl_mechanism: Option<String>,
    /// The SASL username (`$ConnectionString` for Event Hubs). The password comes from the
    /// environment variable FLEETSCORE_KAFKA_PASSWORD (for Event Hubs, the connection string)
    /// or from --kafka-password-file, never from the command line.
    #[arg(long, env = "FLEETSCORE_KAFKA_USERNAME")]
    pub kafka_username: Option<String>,
    /// A file holding the SASL password (its first line), e.g. a mounted Kubernetes Secret.
    #[arg(
        long,
        env = "FLEETSCORE_KAFKA_PASSWORD_FILE",
        requires = "kafka_username"
    )]
    pub kafka_password_file: Option<PathBuf>,
    /// How long the group coordinator keeps this member without a heartbeat; a killed member's
    /// partitions wait that long before another member takes them over.
    #[arg(long, env = "FLEETSCORE_KAFKA_SESSION_TIMEOUT", default_value = "30s",
          value_parser = fleetscore_core::parse_duration)]
    pub kafka_session_timeout: Duration,
}

/// The first line of a secret file, or the environment variable `var`.
fn secret(file: Option<&Path>, var: &str, what: &str) -> Result<Option<String>> {
    Ok(match file {
        Some(file) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("reading the {what} from {}", file.display()))?
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        ),
        None => std::env::var(var).ok(),
    })
}

/// The Kafka source's settings: the URL, TLS (`--kafka-ca`), SASL (mechanism, username, the
/// password from FLEETSCORE_KAFKA_PASSWORD or a file) and the session timeout.
fn kafka_config(url: &str, a: &ServeArgs) -> Result<KafkaConfig> {
    let mut config = KafkaConfig::new(url, &a.kafka_group)?;
    config.session_timeout = a.kafka_session_timeout;
    if let Some(ca) = &a.kafka_ca {
        if config.tls.is_none() {
            bail!("--kafka-ca is for TLS: use kafkas:// in --kafka");
        }
        let roots = fleetscore_tls::Roots::File(ca.clone());
        let tls =
            fleetscore_tls::client_config(&roots, None).context("Kafka over TLS (--kafka-ca)")?;
        config.tls = Some(Arc::new(tls));
    }
    let password = secret(
        a.kafka_password_file.as_deref(),
        "FLEETSCORE_KAFKA_PASSWORD",
        "Kafka password",
    )?;
    config.sasl = match (&a.kafka_username, password) {
        (Some(username), password) => Some(Sasl {
            mechanism: Mechanism::parse(a.kafka_sasl_mechanism.as_deref().unwrap_or("PLAIN"))?,
            username: username.clone(),
            password: password.unwrap_or_default(),
        }),
        (None, Some(_)) => bail!("FLEETSCORE_KAFKA_PASSWORD is set but --kafka-username is not"),
        (None, None) => None,
    };
    if config.sasl.is_some() && config.tls.is_none() {
        tracing::warn!("kafka: SASL without TLS sends the credentials in the clear (kafka://)");
    }
    Ok(config)
}

/// `fleetscore log ...`.
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Partitions, their offsets and size, and the consumer groups' committed offsets.
    Stats(LogStatsArgs),
    /// Print a partition's readings from an offset, as JSON lines.
    Read(LogReadArgs),
}

/// `fleetscore log stats`.
#[derive(Debug, Args)]
pub struct LogStatsArgs {
    #[command(flatten)]
    pub log: LogDirArgs,
    /// Consumer groups whose committed offsets to show.
    #[arg(long = "group")]
    pub groups: Vec<String>,
}

/// `fleetscore log read`.
#[derive(Debug, Args)]
pub struct LogReadArgs {
    #[command(flatten)]
    pub log: LogDirArgs,
    /// The partition (all of them when not given).
    #[arg(long)]
    pub partition: Option<u32>,
    /// First offset to print.
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// Print at most this many readings per partition.
    #[arg(long)]
    pub limit: Option<u64>,
}

/// Opens an existing log to read, beside a server that may be writing it.
pub(crate) fn open_existing(dir: &Path) -> Result<Log> {
    if Meta::read(dir)?.is_none() {
        bail!(
            "{}: no log here (start `fleetscore ingest serve` first)",
            dir.display()
        );
    }
    Log::open_reader(dir).with_context(|| format!("reading the log in {}", dir.display()))
}

/// The MQTT source's settings: the URL, TLS (`--mqtt-ca`, `--mqtt-cert`, `--mqtt-key`) and the
/// login (`--mqtt-username`, the password from FLEETSCORE_MQTT_PASSWORD or a file).
fn mqtt_config(url: &str, a: &ServeArgs) -> Result<MqttConfig> {
    let mut config = MqttConfig::new(url, &a.mqtt_topic, &a.mqtt_client_id)?;
    let identity = fleetscore_tls::Identity::from_options(
        a.mqtt_cert.as_deref(),
        a.mqtt_key.as_deref(),
        "--mqtt-cert",
        "--mqtt-key",
    )
    .map_err(anyhow::Error::msg)?;
    if config.tls.is_none() && (a.mqtt_ca.is_some() || identity.is_some()) {
        bail!("--mqtt-ca, --mqtt-cert and --mqtt-key are for TLS: use mqtts:// in --mqtt");
    }
    if config.tls.is_some() && (a.mqtt_ca.is_some() || identity.is_some()) {
        let roots = fleetscore_tls::Roots::file_or_system(a.mqtt_ca.as_deref());
        let tls = fleetscore_tls::client_config(&roots, identity.as_ref())
            .context("MQTT over TLS (--mqtt-ca, --mqtt-cert, --mqtt-key)")?;
        config.tls = Some(Arc::new(tls));
    }
    let password = secret(
        a.mqtt_password_file.as_deref(),
        "FLEETSCORE_MQTT_PASSWORD",
        "MQTT password",
    )?;
    config.login = match (&a.mqtt_username, password) {
        (Some(username), password) => Some(Login {
            username: username.clone(),
            password: password.unwrap_or_default(),
        }),
        (None, Some(_)) => bail!("FLEETSCORE_MQTT_PASSWORD is set but --mqtt-username is not"),
        (None, None) => None,
    };
    Ok(config)
}

pub fn ingest(command: IngestCommand) -> Result<ExitCode> {
    let IngestCommand::Serve(a) = command;
    let mqtt = a
        .mqtt
        .as_deref()
        .map(|url| mqtt_config(url, &a))
        .transpose()?;
    let kafka = a
        .kafka
        .as_deref()
        .map(|url| kafka_config(url, &a))
        .transpose()?;
    let tokens = a.tokens.as_deref().map(Tokens::load).transpose()?;
    let tls = a.tls.config()?;
    let existing = Meta::read(&a.log.log_dir)?.map(|m| m.partitions);
    if let (Some(have), Some(want)) = (existing, a.partitions)
        && have != want
    {
        bail!(
            "{} has {have} partitions; a log's partition count cannot change (asked for {want})",
            a.log.log_dir.display()
        );
    }
    let log = Log::open(
        &a.log.log_dir,
        Options {
            partitions: existing.or(a.partitions).unwrap_or(8),
            segment_bytes: a.segment_bytes,
            max_pending_bytes: a.max_pending,
            retention_age: (a.retention_hours > 0)
                .then(|| Duration::from_secs(a.retention_hours * 3600)),
            retention_bytes: a.retention_bytes,
        },
    )
    .with_context(|| format!("opening the log in {}", a.log.log_dir.display()))?;
    // Retention runs in the background while the server does; a failed pass is logged, not
    // fatal.
    let _retention = log
        .spawn_retention(Duration::from_secs(60), Arc::new(SystemClock))
        .context("starting the retention thread")?;
    let limits = Limits {
        max_future_ms: a.max_future_secs.saturating_mul(1000),
    };
    let config = Config {
        tokens,
        max_body_bytes: a.max_body,
        max_inflight_bytes: a.max_inflight,
        body_timeout: a.body_timeout,
        max_connections: a.max_connections,
        idle_timeout: a.idle_timeout,
        limits,
        tls,
    };
    // MQTT and Kafka beside HTTP, into the same log; their counters show in /v1/stats.
    let mut runner = Runner::new(log);
    let mut stats = SourceStats::default();
    if let Some(m) = mqtt {
        let source = MqttSource::new(m, limits);
        stats.mqtt = Some(source.stats());
        runner.add(source);
    }
    if let Some(k) = kafka {
        let source = KafkaSource::new(k, limits);
        stats.kafka = Some(source.stats());
        runner.add(source);
    }
    let http = HttpSource::bind(a.listen, config, stats.clone())?;
    // What each source took in, beside the log, for the monitor (`serve --log-dir`).
    let _counters = fleetscore_ingest::publish::start(
        a.log.log_dir.clone(),
        fleetscore_ingest::publish::Counters {
            http: Some(http.stats()),
            others: stats,
        },
        COUNTERS_EVERY,
    );
    // Tests and scripts wait for this line to know the port.
    println!("listening on {}://{}", a.tls.scheme(), http.local_addr());
    runner.add(http);
    // Until SIGINT or SIGTERM; then the requests in progress are answered.
    runner.run_until_terminated()?;
    Ok(ExitCode::SUCCESS)
}

/// How often a running ingest publishes its counters beside the log.
pub const COUNTERS_EVERY: Duration = Duration::from_secs(5);

pub fn log(command: LogCommand) -> Result<ExitCode> {
    match command {
        LogCommand::Stats(a) => {
            let log = open_existing(&a.log.log_dir)?;
            let mut partitions = Vec::new();
            for p in 0..log.partitions() {
                let (start, end) = log.bounds(p)?;
                partitions.push(serde_json::json!({
                    "partition": p, "start_offset": start, "end_offset": end,
                }));
            }
            let mut groups = serde_json::Map::new();
            for g in &a.groups {
                let committed = log.committed(g)?;
                groups.insert(
                    g.clone(),
                    serde_json::json!(
                        committed
                            .iter()
                            .map(|(p, o)| (p.to_string(), *o))
                            .collect::<std::collections::BTreeMap<_, _>>()
                    ),
                );
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "log_dir": a.log.log_dir,
                    "partitions": partitions,
                    "groups": groups,
                }))?
            );
        }
        LogCommand::Read(a) => {
            use std::io::Write;
            let log = open_existing(&a.log.log_dir)?;
            let partitions: Vec<u32> = match a.partition {
                Some(p) => vec![p],
                None => (0..log.partitions()).collect(),
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for p in partitions {
                let mut next = a.from;
                let mut printed = 0u64;
                'partition: loop {
                    let r = log.read(p, next, 1 << 20)?;
                    if r.records.is_empty() {
                        break;
                    }
                    next = r.next_offset;
                    for (offset, bytes) in r.records {
                        if a.limit.is_some_and(|l| printed >= l) {
                            break 'partition;
                        }
                        let reading = Reading::decode(&bytes)
                            .map_err(|e| anyhow::anyhow!("partition {p} offset {offset}: {e}"))?;
                        writeln!(
                            out,
                            "{}",
                            serde_json::json!({
                                "partition": p, "offset": offset, "device": reading.device,
                                "tag": reading.tag, "ts": reading.ts_ms, "value": reading.value,
                            })
                        )?;
                        printed += 1;
                    }
                }
            }
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
