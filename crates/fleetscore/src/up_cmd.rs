//! `fleetscore up`: the whole pipeline in one process — HTTP ingest (and MQTT or Kafka when
//! given) into the durable log, the aggregator (windows and the raw readings into the store,
//! exactly once), the scheduler on the watermark trigger, and worker threads — on the embedded
//! defaults under one folder. Each part can be left out, so the same command is one node of a
//! larger deployment. `--demo` adds a live simulated fleet.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use fleetscore_aggregate::stream::{self, Options as AggregateOptions, Report};
use fleetscore_core::{SystemClock, rfc3339};
use fleetscore_ingest::kafka::{KafkaConfig, KafkaSource};
use fleetscore_ingest::mqtt::{MqttConfig, MqttSource};
use fleetscore_ingest::server::{Config as IngestConfig, HttpSource, SourceStats};
use fleetscore_ingest::{Limits, Runner};
use fleetscore_jobs::run::{self, RunOptions};
use fleetscore_log::{Log, Meta, Options as LogOptions};
use fleetscore_schedule::driver::What;
use fleetscore_schedule::{Scheduler, SchedulerOptions};

use crate::demo::Demo;
use crate::fleet_cmd::StoreArgs;

/// `fleetscore up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The folder of the pipeline's log, and of its store and coordinator unless --store or
    /// --db name others.
    #[arg(long, default_value = "fleetscore-up")]
    pub dir: PathBuf,
    /// Where ingest takes readings over HTTP.
    #[arg(long, default_value = "127.0.0.1:8086")]
    pub ingest_listen: SocketAddr,
    /// Where the dashboard, the JSON API and /metrics are served.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub tls: crate::tls_args::TlsServerArgs,
    /// Leave out the monitor (dashboard, API, /metrics).
    #[arg(long)]
    pub no_monitor: bool,
    /// Also take readings from this MQTT broker (`mqtt://host[:port]`, or `mqtts://` over TLS
    /// trusting the system's CAs; topic `sensors/{device}/{tag}`). CA files, client
    /// certificates and passwords: `fleetscore ingest serve`.
    #[arg(long)]
    pub mqtt: Option<String>,
    /// Also consume readings from this Kafka topic (`kafka://host:port/topic`, or `kafkas://`
    /// over TLS trusting the system's CAs). CA files and SASL: `fleetscore ingest serve`.
    #[arg(long)]
    pub kafka: Option<String>,
    /// The aggregator's window (tumbling).
    #[arg(long, default_value = "1m", value_parser = fleetscore_core::parse_duration)]
    pub window: Duration,
    /// The out-of-order delay the aggregator waits for (event time).
    #[arg(long, default_value = "10s", value_parser = fleetscore_core::parse_duration)]
    pub delay: Duration,
    /// A partition idle this long (wall clock) has its windows closed.
    #[arg(long, default_value = "1m", value_parser = fleetscore_core::parse_duration)]
    pub idle_timeout: Duration,
    /// Seconds a task's claim lasts without a heartbeat (after a crash, the wait before a task
    /// held by the dead process runs again).
    #[arg(long, default_value_t = 60)]
    pub lease: u64,
    /// Worker threads executing runs (default: all cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Leave out ingest (readings come from elsewhere into the same log).
    #[arg(long)]
    pub no_ingest: bool,
    /// Leave out the aggregator.
    #[arg(long)]
    pub no_aggregate: bool,
    /// Leave out the scheduler.
    #[arg(long)]
    pub no_scheduler: bool,
    /// Leave out the workers (`fleetscore worker` processes run the runs).
    #[arg(long)]
    pub no_workers: bool,
    #[command(flatten)]
    pub cache: crate::fleet_cmd::ModelCacheArgs,
    /// Simulated devices post the reference fleet's readings (time-shifted to now), scored by
    /// its models on an hourly schedule.
    #[arg(long)]
    pub demo: bool,
    /// With --demo: event time runs this many times faster than the clock (60: an hour a
    /// minute).
    #[arg(long, default_value_t = 60.0)]
    pub speed: f64,
    /// With --demo: this many more devices, replaying the reference devices' behaviour with
    /// their own noise and injected anomalies.
    #[arg(long, default_value_t = 0)]
    pub devices: usize,
}

/// The first failure of a part, which stops the others.
#[derive(Default)]
struct Failure(Mutex<Option<String>>);

impl Failure {
    fn set(&self, part: &str, e: impl std::fmt::Display, stop: &AtomicBool) {
        let mut first = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(format!("{part}: {e:#}"));
        }
        stop.store(true, Ordering::SeqCst);
    }
}

/// Whether the user named a store (`--store` or FLEETSCORE_STORE) rather than leaving the
/// default.
fn store_given() -> bool {
    std::env::var_os("FLEETSCORE_STORE").is_some()
        || std::env::args().any(|a| a == "--store" || a.starts_with("--store="))
}

pub fn up(args: &StoreArgs, a: UpArgs) -> Result<ExitCode> {
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("cannot create {}", a.dir.display()))?;
    let mut store_args = args.clone();
    if !store_given() {
        store_args.store = a.dir.join("store").to_string_lossy().into_owned();
    }
    let store = store_args.open()?;
    let coordinator = store_args.coordinator()?;
    let c = coordinator.as_ref();
    let log_dir = a.dir.join("log");

    // Everything that can fail on its own input fails here, before any part starts.
    let log = if a.no_ingest && a.no_aggregate {
        None
    } else if a.no_ingest {
        if Meta::read(&log_dir)?.is_none() {
            bail!(
                "{}: no log here, and --no-ingest makes none",
                log_dir.display()
            );
        }
        Some(Log::open_reader(&log_dir).context("reading the log")?)
    } else {
        let partitions = Meta::read(&log_dir)?.map_or(8, |m| m.partitions);
        Some(
            Log::open(
                &log_dir,
                LogOptions {
                    partitions,
                    ..LogOptions::default()
                },
            )
            .with_context(|| format!("opening the log in {}", log_dir.display()))?,
        )
    };
    let demo = if a.demo {
        let demo = Demo::open(&a.dir, a.speed, a.devices)?;
        let models = demo.setup(&store, c)?;
        let license = a.dir.join("demo-LICENSE.txt");
        std::fs::write(&license, crate::demo::LICENSE)?;
        println!(
            "demo: {} devices, {models} models (the reference fleet's data and models; their licence: {}); event time {}x the clock, now {}",
            3 + a.devices,
            license.display(),
            a.speed,
            rfc3339(demo.event_now())
        );
        Some(demo)
    } else {
        None
    };
    // One certificate for both listeners.
    let tls = a.tls.config()?;
    let scheme = a.tls.scheme();
    let http = if a.no_ingest {
        None
    } else {
        let mut config = IngestConfig {
            tls: tls.clone(),
            ..IngestConfig::default()
        };
        if a.demo {
            // The demo's event time runs ahead of the clock.
            config.limits.max_future_ms = i64::MAX / 4;
        }
        let source = HttpSource::bind(a.ingest_listen, config, SourceStats::default())
            .with_context(|| format!("ingest cannot listen on {}", a.ingest_listen))?;
        Some(source)
    };
    let ingest_addr = http.as_ref().map(HttpSource::local_addr);
    let monitor = if a.no_monitor {
        None
    } else {
        fleetscore_monitor::check_listen(a.listen, None)?;
        let listener = std::net::TcpListener::bind(a.listen)
            .with_context(|| format!("the monitor cannot listen on {}", a.listen))?;
        let coordinator: Arc<dyn fleetscore_jobs::coordinator::Coordinator> =
            Arc::from(store_args.coordinator()?);
        let monitor = fleetscore_monitor::Monitor::new(
            fleetscore_monitor::Sources {
                store: store_args.open()?,
                coordinator: Some(Arc::clone(&coordinator)),
                log_dir: log.as_ref().map(|_| log_dir.clone()),
                schedules: Arc::new(crate::schedule_cmd::MonitorSchedules(coordinator)),
                clock: Arc::new(SystemClock),
                options: fleetscore_monitor::Options::default(),
            },
            None,
        );
        Some((listener, tls.clone(), monitor))
    };
    let _lock = if a.no_aggregate {
        None
    } else {
        Some(stream::NameLock::take(&log_dir, "default")?)
    };

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let mut run_options = RunOptions {
        lease: Duration::from_secs(a.lease.max(1)),
        model_limits: store_args.model_limits(),
        faults: crate::fleet_cmd::faults_from_env(),
        model_cache: a.cache.cache(),
        ..RunOptions::default()
    };
    if let Some(w) = a.workers {
        run_options.workers = w.max(1);
    }
    let threads = if a.no_workers { 0 } else { run_options.workers };

    println!("fleetscore up: the pipeline in {}", a.dir.display());
    if let Some(addr) = ingest_addr {
        println!("  ingest     {scheme}://{addr}/v1/readings");
    }
    if let Some((listener, _, _)) = &monitor {
        println!("  dashboard  {scheme}://{}/", listener.local_addr()?);
    }
    println!("  store      {}", store.location());
    if let Some(log) = &log {
        println!(
            "  log        {} ({} partitions)",
            log_dir.display(),
            log.partitions()
        );
    }
    println!(
        "  parts      {}",
        [
            (!a.no_ingest).then_some("ingest"),
            (!a.no_monitor).then_some("monitor"),
            (!a.no_aggregate).then_some("aggregate (windows and raw readings)"),
            (!a.no_scheduler).then_some("scheduler"),
            (threads > 0).then_some("workers"),
            a.demo.then_some("demo devices"),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ")
    );
    println!("  stop       Ctrl-C or SIGTERM");

    let failure = Failure::default();
    let stop_arc = Arc::clone(&stop);
    std::thread::scope(|s| {
        let (stop, failure, store, log) = (&*stop, &failure, &store, &log);
        if let (Some(http), Some(log)) = (http, log.clone()) {
            let (mqtt, kafka) = (a.mqtt.clone(), a.kafka.clone());
            let log_dir = log_dir.clone();
            s.spawn(move || {
                if let Err(e) = ingest(log, log_dir, http, mqtt, kafka, stop) {
                    failure.set("ingest", e, stop);
                }
            });
        }
        if let (false, Some(log)) = (a.no_aggregate, log) {
            let config = fleetscore_aggregate::Config {
                size_ms: a.window.as_millis() as i64,
                hop_ms: a.window.as_millis() as i64,
                delay_ms: a.delay.as_millis() as i64,
                idle_timeout_ms: a.idle_timeout.as_millis() as i64,
                ..fleetscore_aggregate::Config::default()
            };
            let options = AggregateOptions {
                raw: true,
                poll: Duration::from_millis(200),
                epoch_interval: Duration::from_millis(500),
                ..AggregateOptions::default()
            };
            s.spawn(move || {
                let mut published = None;
                let result = stream::run(log, store, config, options, stop, &mut |r: &Report| {
                    if let (Some(at), Some(newest)) = (r.complete_before, r.newest_event)
                        && published != Some(at)
                    {
                        match c.publish_watermark("default", at, newest, fleetscore_core::now_ms())
                        {
                            Ok(()) => published = Some(at),
                            Err(e) => tracing::warn!("publishing the watermark: {e}"),
                        }
                    }
                });
                if let Err(e) = result {
                    failure.set("aggregate", e, stop);
                }
            });
        }
        if !a.no_scheduler {
            let options = SchedulerOptions {
                run: run_options.clone(),
                ..SchedulerOptions::default()
            };
            s.spawn(move || {
                let scheduler = Scheduler::new(store, c, &SystemClock, options);
                while !stop.load(Ordering::Relaxed) {
                    match scheduler.step() {
                        Ok(events) => {
                            for e in &events {
                                print_event(e);
                            }
                            // A tenth of a second between idle passes: a watermark that closes a
                            // window starts its run within about that.
                            let pause = if events.is_empty() { 100 } else { 20 };
                            std::thread::sleep(Duration::from_millis(pause));
                        }
                        Err(e) => {
                            failure.set("scheduler", e, stop);
                            return;
                        }
                    }
                }
            });
        }
        for n in 0..threads {
            let options = &run_options;
            s.spawn(move || {
                let name = format!("{}-{n}", options.worker_prefix);
                if let Err(e) = run::serve(store, c, &name, options, None, &|| {
                    stop.load(Ordering::Relaxed)
                }) {
                    failure.set("worker", e, stop);
                }
            });
        }
        if let Some((listener, tls, monitor)) = monitor {
            let stop_flag = Arc::clone(&stop_arc);
            s.spawn(move || {
                if let Err(e) = serve_monitor(listener, tls, monitor, stop_flag) {
                    failure.set("monitor", e, stop);
                }
            });
        }
        if let (Some(demo), Some(addr)) = (demo, ingest_addr) {
            s.spawn(move || {
                if let Err(e) = demo.run(addr, stop) {
                    failure.set("demo", e, stop);
                }
            });
        }
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "fleetscore up: stopping (ingest answers what it took, the aggregator ends its epoch, workers their tasks)"
        );
    });
    let failed = failure.0.into_inner().unwrap_or_else(|p| p.into_inner());
    match failed {
        Some(e) => bail!("{e}"),
        None => {
            eprintln!("fleetscore up: stopped");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A line per window the scheduler moved that a person watching wants to see.
fn print_event(e: &fleetscore_schedule::Event) {
    use std::io::Write;
    let line = match &e.what {
        What::Succeeded { rows, anomalies } => format!(
            "scored {} [{} .. {}): {rows} readings, {anomalies} anomalies (run {})",
            e.schedule,
            rfc3339(e.from_ms),
            rfc3339(e.to_ms),
            e.run_id
        ),
        What::Fired | What::Started(_) | What::Waiting(_) => return,
        _ => e.to_string(),
    };
    println!("{line}");
    let _ = std::io::stdout().flush();
}

/// The dashboard, API and /metrics on a runtime of their own, refreshed in the background,
/// until `stop`.
fn serve_monitor(
    listener: std::net::TcpListener,
    tls: Option<Arc<fleetscore_tls::rustls::ServerConfig>>,
    monitor: Arc<fleetscore_monitor::Monitor>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let refresh = monitor.spawn_refresh(Duration::from_secs(2))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("monitor")
        .build()?;
    let served = runtime.block_on(async {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        fleetscore_monitor::serve(
            listener,
            tls,
            fleetscore_monitor::app(monitor),
            async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        )
        .await
    });
    refresh.stop();
    served?;
    Ok(())
}

/// Ingest's sources on a runtime of their own, until `stop`.
fn ingest(
    log: Log,
    log_dir: PathBuf,
    http: HttpSource,
    mqtt: Option<String>,
    kafka: Option<String>,
    stop: &AtomicBool,
) -> Result<()> {
    let limits = Limits::default();
    let mut runner = Runner::new(log);
    let mut counters = fleetscore_ingest::publish::Counters {
        http: Some(http.stats()),
        others: SourceStats::default(),
    };
    if let Some(url) = mqtt {
        let config = MqttConfig::new(&url, "sensors/{device}/{tag}", "fleetscore-up")?;
        let source = MqttSource::new(config, limits);
        counters.others.mqtt = Some(source.stats());
        runner.add(source);
    }
    if let Some(url) = kafka {
        let source = KafkaSource::new(KafkaConfig::new(&url, "fleetscore-up")?, limits);
        counters.others.kafka = Some(source.stats());
        runner.add(source);
    }
    runner.add(http);
    // What each source took in, beside the log, for the monitor.
    let _counters =
        fleetscore_ingest::publish::start(log_dir, counters, crate::ingest_cmd::COUNTERS_EVERY);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ingest")
        .build()?;
    runtime.block_on(runner.run(async {
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }))?;
    Ok(())
}
