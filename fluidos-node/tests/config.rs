//! Config files and overrides: defaults, precedence, and an error naming the
//! file, the key and the reason for each kind of bad input.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use fluidos_node::cli::{Cli, Command};
use fluidos_node::config::{
    self, ConfigError, Globals, Origin, Overrides, RawConfig, parse_str, validate,
};

fn file() -> PathBuf {
    PathBuf::from("/etc/fluidos/config.toml")
}

/// Parses and validates `text` as the file `/etc/fluidos/config.toml`.
fn load(text: &str) -> Result<config::Config, ConfigError> {
    let raw = parse_str(text, &file())?;
    validate(&raw, Some(&file()))
}

/// Asserts the error names the file, the key and a reason fragment.
fn assert_err(text: &str, key: &str, reason: &str) {
    let err = load(text).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("/etc/fluidos/config.toml"),
        "no file in: {msg}"
    );
    assert_eq!(err.key(), Some(key), "wrong key in: {msg}");
    assert!(msg.contains(key), "no key in: {msg}");
    assert!(msg.contains(reason), "no `{reason}` in: {msg}");
}

#[test]
fn an_empty_file_is_the_documented_defaults() {
    let c = load("data_dir = \"/d\"").unwrap();
    assert_eq!(c.data_dir, Path::new("/d"));
    let listen: Vec<String> = c.listen.iter().map(|a| a.to_string()).collect();
    assert_eq!(
        listen,
        ["/ip4/0.0.0.0/tcp/7070", "/ip4/0.0.0.0/udp/7070/quic-v1"]
    );
    assert!(c.mdns);
    assert_eq!(c.control.listen.to_string(), "127.0.0.1:7071");
    assert_eq!(c.remeasure_interval, Duration::from_secs(60));
    assert_eq!(c.reserve.fraction_ppm, 100_000);
    assert_eq!(c.reserve.min_cpu_millis, 1000);
    assert_eq!(c.reserve.min_memory_bytes, 512 << 20);
    assert_eq!(c.offer.pods, 110);
    assert_eq!(c.offer.price.amount_micros, 1_000_000);
    assert_eq!(c.offer.min.cpu_millis, 500);
    assert_eq!(c.offer.step.storage_bytes, 1 << 30);
    assert!(c.roles.provider && c.roles.consumer && !c.roles.supernode);
    assert_eq!(c.key_path(), Path::new("/d/node.key"));
}

#[test]
fn a_full_file_is_read() {
    let c = load(
        r#"
        data_dir = "/srv/fluidos"
        listen = ["/ip4/127.0.0.1/tcp/7000"]
        mdns = false
        peers = ["/ip4/198.18.0.2/tcp/7070"]
        remeasure_interval = "5m"
        pods = 20
        labels = { zone = "edge" }
        [roles]
        supernode = true
        [location]
        country = "it"
        city = "Turin"
        lat = 45.07
        lon = 7.686
        [price]
        amount = 0.8
        currency = "eur"
        period = "day"
        model = "pay_per_use"
        [reserve]
        percent = 25
        min_cpu = "1500m"
        min_memory = "1GiB"
        [partition.min]
        cpu = 1
        [[catalogs]]
        name = "eu-west"
        addresses = ["/ip4/198.18.0.1/tcp/7070/p2p/12D3KooWGfqXqX8RBx2ttu3NVtCp5cWeNhvJyxfgXPvNK3SNUzLB"]
        "#,
    )
    .unwrap();
    assert!(!c.mdns);
    assert_eq!(c.remeasure_interval, Duration::from_secs(300));
    assert_eq!(c.offer.pods, 20);
    assert!(c.roles.supernode && c.roles.provider);
    let loc = c.offer.location.unwrap();
    assert_eq!(loc.country, "IT");
    assert_eq!(loc.lat_e6, Some(45_070_000));
    assert_eq!(c.offer.price.amount_micros, 800_000);
    assert_eq!(c.offer.price.currency, "EUR");
    assert_eq!(c.reserve.fraction_ppm, 250_000);
    assert_eq!(c.reserve.min_cpu_millis, 1500);
    assert_eq!(c.offer.min.cpu_millis, 1000);
    assert_eq!(
        c.offer.min.memory_bytes,
        512 << 20,
        "unset keys keep their defaults"
    );
    assert_eq!(c.catalogs[0].name.as_str(), "eu-west");
    assert_eq!(c.offer.labels["zone"], "edge");
}

#[test]
fn syntax_errors_name_the_file_and_position() {
    let err = load("listen = [\"/ip4/1.2.3.4/tcp/1\"\nmdns = true").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("/etc/fluidos/config.toml"), "{msg}");
    assert!(msg.contains("line"), "{msg}");
}

#[test]
fn unknown_keys_are_refused_not_ignored() {
    let err = load("[reserve]\npercnt = 10").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("percnt"), "{msg}");
    assert_eq!(err.key(), Some("reserve.percnt"), "{msg}");
}

#[test]
fn type_errors_name_the_nested_key() {
    let err = load("[reserve]\npercent = \"ten\"").unwrap_err();
    assert_eq!(err.key(), Some("reserve.percent"), "{err}");
    let err = load("[[catalogs]]\nname = \"a\"\naddresses = [1]").unwrap_err();
    assert_eq!(err.key(), Some("catalogs.0.addresses"), "{err}");
}

#[test]
fn semantic_errors_name_key_and_reason() {
    assert_err(
        "[reserve]\npercent = 150",
        "reserve.percent",
        "not between 0 and 100",
    );
    assert_err(
        "[reserve]\nmin_memory = \"lots\"",
        "reserve.min_memory",
        "invalid quantity",
    );
    assert_err(
        "listen = [\"/ip4/1.2.3.4/tcp/1\", \"tcp://x\"]",
        "listen.1",
        "not a multiaddr",
    );
    assert_err("listen = []", "listen", "at least one");
    assert_err("peers = [\"nope\"]", "peers.0", "not a multiaddr");
    assert_err(
        "[location]\ncountry = \"Italy\"",
        "location.country",
        "ISO 3166-1 alpha-2",
    );
    assert_err(
        "[location]\ncountry = \"IT\"\nlat = 91.0",
        "location.lat",
        "outside",
    );
    assert_err("[price]\ncurrency = \"euro\"", "price.currency", "ISO 4217");
    assert_err(
        "[price]\nperiod = \"week\"",
        "price.period",
        "hour, day or month",
    );
    assert_err(
        "[price]\nmodel = \"free\"",
        "price.model",
        "reserved or pay_per_use",
    );
    assert_err("[price]\namount = -1.0", "price.amount", "not an amount");
    assert_err(
        "remeasure_interval = \"soon\"",
        "remeasure_interval",
        "not a duration",
    );
    assert_err(
        "remeasure_interval = \"0s\"",
        "remeasure_interval",
        "at least",
    );
    assert_err(
        "flavor_validity = \"5x\"",
        "flavor_validity",
        "no known unit",
    );
    assert_err(
        "[control]\nlisten = \"0.0.0.0:7071\"",
        "control.listen",
        "not a loopback address",
    );
    assert_err(
        "[control]\nlisten = \"localhost\"",
        "control.listen",
        "not an ip:port",
    );
    assert_err(
        "[control]\nmax_concurrent_requests = 0",
        "control.max_concurrent_requests",
        "between 1 and 4096",
    );
    assert_err(
        "[partition.step]\ncpu = \"two\"",
        "partition.step.cpu",
        "millicores",
    );
    assert_err(
        "[[catalogs]]\nname = \"bad name!\"\naddresses = []",
        "catalogs.0.name",
        "invalid catalog name",
    );
    assert_err(
        "[[catalogs]]\nname = \"c\"\naddresses = [\"/ip4/198.18.0.1/tcp/7070\"]",
        "catalogs.0.addresses.0",
        "/p2p/<peer id>",
    );
}

fn parse_run(args: &[&str]) -> (Globals, Overrides) {
    let mut argv = vec!["fluidos-node"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).unwrap();
    match cli.command {
        Command::Run { overrides } => (cli.globals, *overrides),
        other => panic!("not run: {other:?}"),
    }
}

#[test]
fn flags_override_the_file_and_errors_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "mdns = true\npods = 5\n[reserve]\npercent = 20\n").unwrap();
    let p = path.to_str().unwrap();
    let (g, o) = parse_run(&[
        "--config",
        p,
        "run",
        "--mdns",
        "false",
        "--reserve-percent",
        "30",
        "--label",
        "a=b",
        "--catalog",
        "cat=/ip4/198.18.0.1/tcp/1/p2p/12D3KooWGfqXqX8RBx2ttu3NVtCp5cWeNhvJyxfgXPvNK3SNUzLB",
    ]);
    let c = config::load(&g, &o).unwrap();
    assert!(!c.mdns);
    assert_eq!(c.offer.pods, 5, "keys without a flag keep the file's value");
    assert_eq!(c.reserve.fraction_ppm, 300_000);
    assert_eq!(c.offer.labels["a"], "b");
    assert_eq!(c.catalogs.len(), 1);
    assert_eq!(c.file.as_deref(), Some(path.as_path()));

    let (g, o) = parse_run(&["--config", p, "run", "--reserve-percent", "101"]);
    let err = config::load(&g, &o).unwrap_err();
    match &err {
        ConfigError::Invalid {
            origin: Origin::Flag { flag, env },
            key,
            ..
        } => {
            assert_eq!(
                (*flag, *env, key.as_str()),
                (
                    "--reserve-percent",
                    "FLUIDOS_RESERVE_PERCENT",
                    "reserve.percent"
                )
            );
        }
        other => panic!("{other}"),
    }
    let (g, o) = parse_run(&["--config", p, "run", "--label", "novalue"]);
    assert!(
        config::load(&g, &o)
            .unwrap_err()
            .to_string()
            .contains("KEY=VALUE")
    );
}

#[test]
fn a_missing_explicit_config_file_is_an_error() {
    let g = Globals {
        config: Some("/nonexistent/fluidos.toml".into()),
        ..Globals::default()
    };
    let err = config::load(&g, &Overrides::default()).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/fluidos.toml"));
}

#[test]
fn init_writes_a_file_that_loads_back_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let g = Globals {
        data_dir: Some(data.clone()),
        ..Globals::default()
    };
    let (_, o) = parse_run(&[
        "run",
        "--country",
        "DE",
        "--city",
        "Berlin",
        "--price",
        "0.25",
    ]);
    let out = config::init(&g, &o, false).unwrap();
    assert_eq!(out.config_path, data.join("config.toml"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
    let text = std::fs::read_to_string(&out.config_path).unwrap();
    assert!(text.contains("# What the host keeps for itself"), "{text}");
    let back = config::load(&g, &Overrides::default()).unwrap();
    assert_eq!(back.offer.location.unwrap().city.as_deref(), Some("Berlin"));
    assert_eq!(back.offer.price.amount_micros, 250_000);
    assert!(matches!(
        config::init(&g, &o, false),
        Err(ConfigError::Exists { .. })
    ));
    config::init(&g, &o, true).unwrap();
}

#[test]
fn render_round_trips_the_defaults() {
    let raw = RawConfig::default();
    let text = config::render(&raw);
    assert_eq!(parse_str(&text, &file()).unwrap(), raw);
}

#[test]
fn durations() {
    assert_eq!(
        config::parse_duration("500ms").unwrap(),
        Duration::from_millis(500)
    );
    assert_eq!(
        config::parse_duration("2h").unwrap(),
        Duration::from_secs(7200)
    );
    assert_eq!(
        config::parse_duration("1d").unwrap(),
        Duration::from_secs(86_400)
    );
    assert!(config::parse_duration("h").is_err());
    assert!(config::parse_duration("99999999999999999d").is_err());
}

#[test]
fn buy_flags_become_an_api_request() {
    let cli = Cli::try_parse_from([
        "fluidos-node",
        "buy",
        "--cpu",
        "2",
        "--memory",
        "4GiB",
        "--max-price",
        "0.5",
        "--country",
        "it",
        "--duration",
        "30m",
    ])
    .unwrap();
    let Command::Buy(args) = cli.command else {
        panic!()
    };
    let req = args.to_request().unwrap();
    assert_eq!(req.cpu_millis, 2000);
    assert_eq!(req.memory_bytes, 4 << 30);
    assert_eq!(req.max_price_micros, Some(500_000));
    assert_eq!(req.duration_ms, 30 * 60_000);
    let cli = Cli::try_parse_from(["fluidos-node", "buy", "--duration", "1h"]).unwrap();
    let Command::Buy(args) = cli.command else {
        panic!()
    };
    assert!(
        args.to_request()
            .unwrap_err()
            .to_string()
            .contains("say what to buy")
    );
    let cli = Cli::try_parse_from(["fluidos-node", "buy", "--cpu", "lots"]).unwrap();
    let Command::Buy(args) = cli.command else {
        panic!()
    };
    assert!(args.to_request().is_err());
}

#[test]
fn catalog_server_is_auto_true_or_false_from_file_or_flag() {
    use fluidos_discovery::CatalogServer;
    assert_eq!(load("").unwrap().catalog_server, CatalogServer::Auto);
    for (text, want) in [
        ("catalog_server = \"auto\"", CatalogServer::Auto),
        ("catalog_server = \"true\"", CatalogServer::Always),
        ("catalog_server = \"false\"", CatalogServer::Never),
        // A bare TOML boolean means the same as its string.
        ("catalog_server = true", CatalogServer::Always),
        ("catalog_server = false", CatalogServer::Never),
    ] {
        assert_eq!(load(text).unwrap().catalog_server, want, "{text}");
    }
    assert_err(
        "catalog_server = \"yes\"",
        "catalog_server",
        "`yes` is not auto, true or false",
    );

    // `init --catalog-server` writes the key; `run --catalog-server` overrides it.
    let dir = tempfile::tempdir().unwrap();
    let g = Globals {
        data_dir: Some(dir.path().join("d")),
        ..Globals::default()
    };
    let (_, o) = parse_run(&["run", "--catalog-server", "true"]);
    let out = config::init(&g, &o, false).unwrap();
    let text = std::fs::read_to_string(&out.config_path).unwrap();
    assert!(text.contains("catalog_server = \"true\""), "{text}");
    let back = config::load(&g, &Overrides::default()).unwrap();
    assert_eq!(back.catalog_server, CatalogServer::Always);
    let (_, o) = parse_run(&["run", "--catalog-server", "false"]);
    assert_eq!(
        config::load(&g, &o).unwrap().catalog_server,
        CatalogServer::Never
    );

    let (_, o) = parse_run(&["run", "--catalog-server", "sometimes"]);
    let err = config::load(&g, &o).unwrap_err();
    let msg = err.to_string();
    match &err {
        ConfigError::Invalid {
            origin: Origin::Flag { flag, env },
            key,
            ..
        } => assert_eq!(
            (*flag, *env, key.as_str()),
            (
                "--catalog-server",
                "FLUIDOS_CATALOG_SERVER",
                "catalog_server"
            )
        ),
        other => panic!("{other}"),
    }
    assert!(
        msg.contains("`sometimes` is not auto, true or false"),
        "{msg}"
    );
}

#[test]
fn buy_wait_becomes_wait_ms_and_is_bounded() {
    let req = |args: &[&str]| {
        let mut argv = vec!["fluidos-node", "buy", "--cpu", "1"];
        argv.extend_from_slice(args);
        let Command::Buy(args) = Cli::try_parse_from(argv).unwrap().command else {
            panic!()
        };
        args.to_request()
    };
    assert_eq!(req(&[]).unwrap().wait_ms, None);
    assert_eq!(req(&["--wait", "10s"]).unwrap().wait_ms, Some(10_000));
    assert_eq!(req(&["--wait", "500ms"]).unwrap().wait_ms, Some(500));
    let err = req(&["--wait", "11m"]).unwrap_err().to_string();
    assert!(err.contains("--wait 11m is longer than 10m"), "{err}");
    let err = req(&["--wait", "soon"]).unwrap_err().to_string();
    assert!(err.contains("--wait"), "{err}");
}

#[test]
fn workloads_section_sets_local_capacity_and_the_lost_provider_timeout() {
    let c = load("data_dir = \"/d\"").unwrap();
    assert_eq!(
        c.workloads.local_capacity,
        fluidos_contracts::Resources::ZERO
    );
    assert_eq!(c.workloads.provider_lost_after, Duration::from_secs(30));
    let c = load(
        "data_dir = \"/d\"\n[workloads]\nlocal_capacity = { cpu = \"1500m\", memory = \"2GiB\", pods = 4 }\nprovider_lost_after = \"1m\"\n",
    )
    .unwrap();
    assert_eq!(c.workloads.local_capacity.cpu_millis, 1500);
    assert_eq!(c.workloads.local_capacity.memory_bytes, 2 << 30);
    assert_eq!(c.workloads.local_capacity.pods, 4);
    assert_eq!(c.workloads.provider_lost_after, Duration::from_secs(60));
    assert_err(
        "[workloads]\nprovider_lost_after = \"2s\"\n",
        "workloads.provider_lost_after",
        "at least 6s",
    );
    assert_err(
        "[workloads]\nlocal_capacity = { cpu = \"lots\" }\n",
        "workloads.local_capacity.cpu",
        "lots",
    );
}

#[test]
fn the_fabric_is_on_by_default_with_the_auto_backend() {
    use fluidos_core::fabric::{BackendChoice, Topology};
    let c = load("data_dir = \"/d\"").unwrap();
    let f = c.fabric.expect("the fabric is on by default");
    assert_eq!(f.backend, BackendChoice::Auto);
    assert_eq!(f.interface, "fluidos0");
    assert_eq!(f.listen.to_string(), "0.0.0.0:51820");
    assert!(f.endpoints.is_empty());
    assert_eq!(f.topology, Topology::Mesh);
    assert_eq!(f.mtu, 1420);
    assert!(f.ipv4);
    assert_eq!(f.persistent_keepalive, None);
    assert!(f.forwards.is_empty());
    assert!(load("[fabric]\nenabled = false").unwrap().fabric.is_none());
}

#[test]
fn a_full_fabric_section_is_read() {
    use fluidos_core::fabric::{BackendChoice, Topology};
    let hub = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";
    let c = load(&format!(
        r#"
[fabric]
backend = "userspace"
interface = "fl-test0"
listen_port = 0
endpoints = ["198.18.0.1:51820", "[2001:db8::1]:51820"]
topology = "hub"
hub = "{hub}"
mtu = 1380
ipv4 = false
persistent_keepalive = 25
forwards = [{{ local = "127.0.0.1:8080", remote = "[fdf0:6a54:bda7:1::1]:80" }},
            {{ local = "127.0.0.1:8081", remote = "100.64.1.2:80" }}]
"#
    ))
    .unwrap();
    let f = c.fabric.unwrap();
    assert_eq!(f.backend, BackendChoice::Userspace);
    assert_eq!(f.interface, "fl-test0");
    assert_eq!(f.listen.port(), 0);
    assert_eq!(f.endpoints.len(), 2);
    assert_eq!(f.topology, Topology::Hub(hub.parse().unwrap()));
    assert_eq!(f.mtu, 1380);
    assert!(!f.ipv4);
    assert_eq!(f.persistent_keepalive, Some(25));
    assert_eq!(f.forwards[1].remote.to_string(), "100.64.1.2:80");
}

#[test]
fn bad_fabric_values_name_key_and_reason() {
    let hub = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";
    assert_err(
        "[fabric]\nbackend = \"kernel\"",
        "fabric.backend",
        "not auto, tun or userspace",
    );
    assert_err(
        "[fabric]\ninterface = \"much-too-long-name\"",
        "fabric.interface",
        "1-15 bytes",
    );
    assert_err(
        "[fabric]\ninterface = \"a/b\"",
        "fabric.interface",
        "not an interface name",
    );
    assert_err("[fabric]\ninterface = \"\"", "fabric.interface", "1-15");
    assert_err("[fabric]\nmtu = 1000", "fabric.mtu", "between 1280");
    assert_err("[fabric]\nmtu = 9001", "fabric.mtu", "9000");
    assert_err(
        "[fabric]\nendpoints = [\"nowhere\"]",
        "fabric.endpoints.0",
        "not an ip:port",
    );
    assert_err(
        "[fabric]\nendpoints = [\"0.0.0.0:51820\"]",
        "fabric.endpoints.0",
        "cannot be reached",
    );
    assert_err(
        "[fabric]\ntopology = \"star\"",
        "fabric.topology",
        "not mesh or hub",
    );
    assert_err(
        "[fabric]\ntopology = \"hub\"",
        "fabric.hub",
        "needs the hub's did:key",
    );
    assert_err(
        &format!("[fabric]\nhub = \"{hub}\""),
        "fabric.hub",
        "only used with topology",
    );
    assert_err(
        "[fabric]\ntopology = \"hub\"\nhub = \"not-a-did\"",
        "fabric.hub",
        "not a node's did:key",
    );
    assert_err(
        "[fabric]\nforwards = [{ local = \"here\", remote = \"100.64.0.1:80\" }]",
        "fabric.forwards.0.local",
        "not an ip:port",
    );
    assert_err(
        "[fabric]\nforwards = [{ local = \"127.0.0.1:0\", remote = \"100.64.0.1:80\" }]",
        "fabric.forwards.0.local",
        "other than 0",
    );
    assert_err(
        "[fabric]\nforwards = [{ local = \"127.0.0.1:1\", remote = \"100.64.0.1:80\" }, { local = \"127.0.0.1:1\", remote = \"100.64.0.1:81\" }]",
        "fabric.forwards.1.local",
        "forwarded twice",
    );
    assert_err(
        "[fabric]\nforwards = [{ local = \"127.0.0.1:1\", remote = \"192.168.1.1:80\" }]",
        "fabric.forwards.0.remote",
        "not an overlay address",
    );
    assert_err(
        "[fabric]\nforwards = [{ local = \"127.0.0.1:1\", remote = \"x\" }]",
        "fabric.forwards.0.remote",
        "not an ip:port",
    );
    // A typo is refused, not ignored.
    let err = load("[fabric]\nenable = true").unwrap_err();
    assert!(err.to_string().contains("enable"), "{err}");
    // Bad values are refused even with the fabric off, so turning it on later works.
    assert_err(
        "[fabric]\nenabled = false\nbackend = \"x\"",
        "fabric.backend",
        "not auto",
    );
}

#[test]
fn fabric_flags_override_the_file() {
    use fluidos_core::fabric::BackendChoice;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[fabric]\nenabled = false\n").unwrap();
    let p = path.to_str().unwrap();
    let (g, o) = parse_run(&[
        "--config",
        p,
        "run",
        "--fabric",
        "true",
        "--fabric-backend",
        "tun",
        "--fabric-interface",
        "flx0",
        "--fabric-port",
        "4000",
    ]);
    let f = config::load(&g, &o).unwrap().fabric.unwrap();
    assert_eq!(f.backend, BackendChoice::Tun);
    assert_eq!(f.interface, "flx0");
    assert_eq!(f.listen.port(), 4000);
    let (g, o) = parse_run(&["--config", p, "run", "--fabric-backend", "magic"]);
    match config::load(&g, &o).unwrap_err() {
        ConfigError::Invalid {
            origin: Origin::Flag { flag, .. },
            key,
            ..
        } => assert_eq!((flag, key.as_str()), ("--fabric-backend", "fabric.backend")),
        other => panic!("{other}"),
    }
}
