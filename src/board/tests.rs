//! Tests of board profiles: every shipped profile loads, layers and fits its board; detection
//! maps real device-tree model strings; layering order holds; a budget that cannot fit is an
//! error naming the setting.

use super::*;

fn table(text: &str) -> toml::Table {
    toml::from_str(text).unwrap()
}

// Proves every built-in profile parses, has all three media, validates and fits its memory.
#[test]
fn every_profile_fits_its_board_on_every_medium() {
    for (name, text) in BUILT_IN {
        let profile = Profile::parse(name, text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            profile.info.name, *name,
            "[board] name matches the built-in key"
        );
        for medium in [Medium::Sd, Medium::UsbSsd, Medium::Nvme] {
            let config = profile
                .layer(medium, toml::Table::new())
                .unwrap_or_else(|e| panic!("{name}/{medium}: {e}"));
            config
                .validate()
                .unwrap_or_else(|e| panic!("{name}/{medium}: {e}"));
            let total = check_fits(&config, &profile.info)
                .unwrap_or_else(|e| panic!("{name}/{medium}: {e}"));
            assert!(total > BASE_BYTES && total <= profile.info.memory_max_bytes);
        }
    }
}

// Proves the built-in list is exactly the files in boards/, so a new profile is not forgotten.
#[test]
fn built_in_list_matches_the_boards_folder() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("boards");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "toml").then(|| p.file_stem().unwrap().to_string_lossy().into())
        })
        .collect();
    on_disk.sort();
    let mut built_in: Vec<String> = BUILT_IN.iter().map(|(n, _)| n.to_string()).collect();
    built_in.sort();
    assert_eq!(on_disk, built_in);
}

// Proves the sd medium of an SD board waits to share fsyncs and nvme does not.
#[test]
fn media_set_the_flush_policy() {
    let p = Profile::load("pi-zero-2w").unwrap();
    let sd = p.layer(Medium::Sd, toml::Table::new()).unwrap();
    let nvme = p.layer(Medium::Nvme, toml::Table::new()).unwrap();
    assert!(sd.flush_ms > 0, "sd waits for more writers per fsync");
    assert_eq!(nvme.flush_ms, 0);
    assert_eq!(
        sd.connections_max, nvme.connections_max,
        "[settings] apply to every medium"
    );
}

// Proves real /proc/device-tree/model strings pick the right profile (longest prefix wins).
#[test]
fn detection_by_model_string() {
    let cases = [
        ("Raspberry Pi Zero 2 W Rev 1.0\0", Some("pi-zero-2w")),
        ("Raspberry Pi 3 Model B Rev 1.2\0", Some("pi3")),
        ("Raspberry Pi 3 Model B Plus Rev 1.3\0", Some("pi3")),
        ("Raspberry Pi 4 Model B Rev 1.4\0", Some("pi4")),
        ("Raspberry Pi 400 Rev 1.0\0", Some("pi4")),
        ("Raspberry Pi 5 Model B Rev 1.0\0", Some("pi5")),
        ("Raspberry Pi Compute Module 4 Rev 1.0\0", Some("cm4")),
        ("Raspberry Pi Model B Plus Rev 1.2\0", None),
        ("Hardkernel ODROID-N2Plus\0", None),
        ("", None),
    ];
    for (model, want) in cases {
        assert_eq!(detect(model), want, "{model:?}");
    }
}

// Proves a config file overrides the profile, and that the file can name board and medium.
#[test]
fn config_file_layers_over_profile() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bramble.toml");
    std::fs::write(
        &path,
        "board = \"pi4\"\nmedium = \"usb-ssd\"\nconnections_max = 77\n",
    )
    .unwrap();
    let mut r = resolve(None, None, Some(&path)).unwrap();
    r.check().unwrap();
    assert_eq!(
        r.config.connections_max, 77,
        "the file wins over the profile"
    );
    assert_eq!(
        r.config.partitions_max, 1000,
        "the profile wins over the defaults"
    );
    assert_eq!(r.config.flush_ms, 1, "usb-ssd's window");
    let board = r.board.unwrap();
    assert_eq!(
        (board.info.name.as_str(), board.medium),
        ("pi4", Medium::UsbSsd)
    );
    // A bad key in the file is reported against the file, not the profile.
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "board = \"pi4\"\nconections_max = 1\n").unwrap();
    let err = resolve(None, None, Some(&typo)).unwrap_err().to_string();
    assert!(
        err.contains("typo.toml") && err.contains("conections_max"),
        "{err}"
    );
    // A profile file named in the config file is found next to it, whatever the working dir.
    let own = dir.path().join("own.toml");
    std::fs::write(&own, BUILT_IN[0].1.replace("pi-zero-2w", "own-board")).unwrap();
    let cfg = dir.path().join("uses-own.toml");
    std::fs::write(&cfg, "board = \"own.toml\"\n").unwrap();
    let r = resolve(None, None, Some(&cfg)).unwrap();
    assert_eq!(r.board.unwrap().info.name, "own-board");
    // A flag's board and medium win over the file's.
    let r = resolve(Some("pi-zero-2w"), Some(Medium::Sd), Some(&path)).unwrap();
    assert_eq!(r.board.unwrap().info.name, "pi-zero-2w");
    assert_eq!(r.config.flush_ms, 3);
}

// Proves no board means the file alone (the behaviour before profiles), with no memory check.
#[test]
fn no_board_is_the_plain_config() {
    let mut r = resolve(None, None, None).unwrap();
    r.check().unwrap();
    assert!(r.board.is_none());
    assert_eq!(r.config, Config::default());
    assert!(
        resolve(None, Some(Medium::Sd), None).is_err(),
        "a medium needs a board"
    );
}

// Proves a budget too big for the board is refused, naming the setting that takes the most.
#[test]
fn a_budget_that_cannot_fit_names_its_field() {
    let p = Profile::load("pi-zero-2w").unwrap();
    let big = table("fetch_inflight_bytes_max = 402653184\n");
    let c = p.layer(Medium::Sd, big).unwrap();
    c.validate().unwrap();
    match check_fits(&c, &p.info) {
        Err(BoardError::DoesNotFit { field, reason, .. }) => {
            assert_eq!(field, "fetch_inflight_bytes_max");
            assert!(reason.contains("192 MiB"), "{reason}");
        }
        other => panic!("expected DoesNotFit, got {other:?}"),
    }
    let many = table("partitions_max = 100000\nnum_partitions = 1\n");
    let c = p.layer(Medium::Sd, many).unwrap();
    match check_fits(&c, &p.info) {
        Err(BoardError::DoesNotFit { field, .. }) => assert_eq!(field, "partitions_max"),
        other => panic!("expected DoesNotFit, got {other:?}"),
    }
    // Absurd values saturate into "does not fit" instead of wrapping around into a fit.
    let absurd = table(
        "partitions_max = 2000000000\nsegment_bytes = 4000000000\nindex_interval_bytes = 1\n",
    );
    let c = p.layer(Medium::Sd, absurd).unwrap();
    assert!(matches!(
        check_fits(&c, &p.info),
        Err(BoardError::DoesNotFit {
            field: "partitions_max",
            ..
        })
    ));
    let mut greedy = p.info.clone();
    greedy.memory_max_bytes = greedy.memory_bytes;
    match check_fits(&p.layer(Medium::Sd, toml::Table::new()).unwrap(), &greedy) {
        Err(BoardError::DoesNotFit { field, .. }) => assert_eq!(field, "memory_max_bytes"),
        other => panic!("expected DoesNotFit, got {other:?}"),
    }
}

// Proves unknown names and keys are errors that say what was wrong.
#[test]
fn unknown_board_medium_and_key_are_named() {
    let err = Profile::load("pi9").unwrap_err().to_string();
    assert!(err.contains("pi9") && err.contains("pi-zero-2w"), "{err}");
    let bad = "[board]\nname='x'\ndescription='x'\nmemory_bytes=1\nmemory_max_bytes=1\nmedium='sd'\n[media.floppy]\nflush_ms=1\n";
    let err = Profile::parse("x", bad).unwrap_err().to_string();
    assert!(err.contains("floppy"), "{err}");
    let p = Profile::load("pi4").unwrap();
    let err = p
        .layer(Medium::Sd, table("bogus_key = 1\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bogus_key"), "{err}");
}

// Proves a profile sized for more RAM than the machine has is flagged (a 1 GB Pi 4 reports about
// 900 MiB), and one that fits is not (a Zero 2 W reports about 430 MiB after the GPU's share).
#[test]
fn profile_bigger_than_the_machine_is_flagged() {
    let pi4 = Profile::load("pi4").unwrap().info;
    let warning = machine_fit_warning(&pi4, 900 << 20).expect("1 GB is too small for pi4");
    assert!(
        warning.contains("pi4") && warning.contains("900 MiB"),
        "{warning}"
    );
    assert!(machine_fit_warning(&pi4, 4 << 30).is_none());
    let zero = Profile::load("pi-zero-2w").unwrap().info;
    assert!(
        machine_fit_warning(&zero, 430 << 20).is_none(),
        "the Zero 2 W profile fits its board"
    );
}
