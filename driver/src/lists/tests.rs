use super::*;
use crate::lists::store::Role;
use std::fs;
use std::time::Duration;

const GOOD: &str = "# good list\ntracker.example\n||ads.example^\n203.0.113.0/24\n";
const GOOD2: &str = "tracker.example\nnew.example\n";
const URL: &str = "https://lists.test/a.txt";

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("lists"));
    (dir, store)
}

fn add(store: &Store, name: &str, url: &str, role: Role) {
    store.add(ListConfig { name: name.into(), url: url.into(), role }).unwrap();
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn run(store: &Store, bodies: &[(&str, Result<&[u8], FetchError>)], secs: u64) -> UpdateStatus {
    let mut fetcher = Prefetched::new();
    for (url, body) in bodies {
        fetcher.insert(*url, body.clone().map(<[u8]>::to_vec));
    }
    update(store, &mut fetcher, &[], at(secs)).unwrap()
}

/// The loaded lists as `(name, text)`.
fn loaded(store: &Store) -> Vec<(String, String)> {
    store.load().unwrap().into_iter().map(|s| (s.name, s.text)).collect()
}

/// What `load` returns once `GOOD` is in force as list `a`.
fn good_state() -> Vec<(String, String)> {
    vec![(format!("store:a ({URL})"), GOOD.to_owned())]
}

#[test]
fn config_round_trip_and_validation() {
    let (_dir, store) = store();
    assert!(store.config().unwrap().is_empty());
    assert!(!store.exists());
    add(&store, "a", URL, Role::Block);
    add(&store, "ok-list_2.v1", "https://x.test:8443/l?x=1", Role::Allow);
    assert_eq!(store.config().unwrap().len(), 2);
    assert_eq!(store.config().unwrap()[1].role, Role::Allow);
    let bad = |name: &str, url: &str| store.add(ListConfig { name: name.into(), url: url.into(), role: Role::Block });
    assert!(matches!(bad("a", URL), Err(StoreError::DuplicateName(_))));
    for name in ["", ".hidden", "../x", "a/b", "a b", &"x".repeat(65)] {
        assert!(matches!(bad(name, URL), Err(StoreError::InvalidName(_))), "{name:?}");
    }
    for url in ["http://x.test/l", "https://", "https://x.test/a b", "ftp://x", "file:///etc/hosts"] {
        assert!(matches!(bad("z", url), Err(StoreError::InvalidUrl(_))), "{url:?}");
    }
    store.remove("a").unwrap();
    assert!(matches!(store.remove("a"), Err(StoreError::UnknownName(_))));
    assert_eq!(store.config().unwrap().len(), 1);
}

#[test]
fn good_update_is_swapped_in_with_metadata() {
    let (_dir, store) = store();
    assert!(store.load().unwrap().is_empty(), "a missing store loads as no lists");
    add(&store, "a", URL, Role::Block);
    let status = run(&store, &[(URL, Ok(GOOD.as_bytes()))], 1000);
    assert!(status.ok && status.swapped, "{status:?}");
    assert_eq!(loaded(&store), good_state());
    let current = store.current().unwrap().unwrap();
    assert_eq!(Some(current.name.clone()), status.generation);
    let copy = &current.lists[0];
    assert_eq!((copy.size, copy.entries, copy.fetched_at), (GOOD.len() as u64, 3, 1000));
    assert_eq!(copy.sha256, sha256_hex(GOOD.as_bytes()));
    assert_eq!(store.status().unwrap(), Some(status));

    let policy = Policy::compile(&store.load().unwrap()).unwrap();
    let rule = policy.check_name("x.ads.example").rule().cloned().unwrap();
    assert_eq!((&*rule.list, rule.line), (format!("store:a ({URL})").as_str(), 3));
}

#[test]
fn sha256_is_the_standard_digest() {
    assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

#[test]
fn every_failure_keeps_the_last_good_copy_and_is_recorded() {
    let (_dir, store) = store();
    add(&store, "a", URL, Role::Block);
    assert!(run(&store, &[(URL, Ok(GOOD.as_bytes()))], 1000).ok);
    let generation = store.current().unwrap().unwrap();
    let truncated = FetchError::Truncated { expected: 100, received: 40 };
    let cases: [(Result<&[u8], FetchError>, &str); 6] = [
        (Err(FetchError::Status(500)), "server answered HTTP 500"),
        (Err(truncated), "download truncated: got 40 of 100 bytes"),
        (Err(FetchError::Connect("connection refused".into())), "cannot connect: connection refused"),
        (Ok(b"ok.example\nbad name.example\n"), ":2: invalid domain name \"bad name.example\""),
        (Ok(b"ok.example\n\nx\xff.example\n"), ":3: the text is not valid UTF-8"),
        (Err(FetchError::TooLarge { limit: 5 }), "larger than the limit"),
    ];
    for (n, (body, message)) in cases.into_iter().enumerate() {
        let status = run(&store, &[(URL, body)], 2000 + n as u64);
        assert!(!status.ok && !status.swapped, "{status:?}");
        let outcome = &status.lists[0];
        let error = outcome.error.as_deref().unwrap();
        assert!(error.starts_with(&format!("store:a ({URL})")), "{error}");
        assert!(error.contains(message), "{error} should contain {message}");
        assert!(outcome.kept_last_good);
        assert_eq!(status.generation.as_deref(), Some(generation.name.as_str()));
        assert_eq!(store.status().unwrap().as_ref(), Some(&status), "recorded for the app");
        assert_eq!(store.current().unwrap().as_ref(), Some(&generation), "nothing swapped");
        assert_eq!(loaded(&store), good_state());
    }
}

#[test]
fn oversized_download_is_refused_by_validation_too() {
    let err = validate("l", Role::Block, vec![b'a'; 11], 10).unwrap_err();
    assert_eq!(err.to_string(), "l:0: list is larger than the limit of 10 bytes");
    let mut fetcher = Prefetched::new();
    fetcher.insert(URL, Ok(vec![b'a'; 11]));
    assert_eq!(fetcher.fetch(URL, 10), Err(FetchError::TooLarge { limit: 10 }));
}

#[test]
fn failing_list_without_copy_has_none_and_others_still_update() {
    let (_dir, store) = store();
    let url_b = "https://lists.test/b.txt";
    add(&store, "a", URL, Role::Block);
    add(&store, "b", url_b, Role::Allow);
    let status = run(&store, &[(URL, Ok(GOOD.as_bytes())), (url_b, Err(FetchError::Status(404)))], 1000);
    assert!(!status.ok && status.swapped);
    assert!(!status.lists[1].kept_last_good);
    assert_eq!(loaded(&store).len(), 1);

    let status = run(&store, &[(URL, Err(FetchError::Timeout)), (url_b, Ok(b"@@||ok.example^\n"))], 2000);
    assert!(!status.ok && status.swapped, "b is new, a keeps its copy");
    assert!(status.lists[0].kept_last_good);
    let lists = store.load().unwrap();
    assert_eq!(lists.len(), 2);
    assert_eq!(lists[0].text, GOOD);
    assert_eq!(lists[1].role, hushwall_core::policy::ListRole::Allow);
    assert_eq!(status.errors(), vec![format!("list \"a\": store:a ({URL}): timed out")]);

    // A removed list is dropped at the next update.
    store.remove("a").unwrap();
    let status = run(&store, &[(url_b, Ok(b"@@||ok.example^\n"))], 3000);
    assert!(status.ok && status.swapped);
    assert_eq!(store.load().unwrap().len(), 1);
}

#[test]
fn the_whole_set_must_compile_with_the_base_lists() {
    // A list that is fine alone but would push the set past the 65,536-list limit is refused as a whole.
    let (_dir, store) = store();
    add(&store, "a", URL, Role::Block);
    let base: Vec<ListSource> = (0..65_536)
        .map(|i| ListSource {
            name: format!("base{i}"),
            role: hushwall_core::policy::ListRole::Block,
            text: String::new(),
        })
        .collect();
    let mut fetcher = Prefetched::new();
    fetcher.insert(URL, Ok(GOOD.as_bytes().to_vec()));
    let status = update(&store, &mut fetcher, &base, at(1)).unwrap();
    assert!(!status.ok && !status.swapped);
    assert!(status.error.as_deref().unwrap().contains("too many lists"), "{status:?}");
    assert!(store.load().unwrap().is_empty());
}

/// What a writer killed at each step leaves behind: partial temporaries, and at worst a complete generation that
/// `current` does not name yet. None of it is read; the last good set loads, and the next update cleans up.
#[test]
fn killed_writer_leaves_the_last_good_set_in_force() {
    let (_dir, store) = store();
    add(&store, "a", URL, Role::Block);
    assert!(run(&store, &[(URL, Ok(GOOD.as_bytes()))], 1000).ok);
    let good = store.current().unwrap().unwrap();
    let dir = store.dir();

    // Killed while writing the new generation's files.
    fs::create_dir(dir.join("gen-00000002.tmp")).unwrap();
    fs::write(dir.join("gen-00000002.tmp/a.txt"), "tracker.exa").unwrap();
    // Killed while writing the new `current`, and while rewriting the config and status.
    fs::write(dir.join("current.tmp"), "gen-000").unwrap();
    fs::write(dir.join("lists.json.tmp"), "{\"lists\": [").unwrap();
    fs::write(dir.join("status.json.tmp"), "").unwrap();
    assert_eq!(store.current().unwrap().as_ref(), Some(&good));
    assert_eq!(loaded(&store), good_state());
    assert_eq!(store.config().unwrap().len(), 1);

    // Killed after the generation was renamed into place but before `current` was switched.
    fs::create_dir(dir.join("gen-00000003")).unwrap();
    fs::write(dir.join("gen-00000003/a.txt"), "other.example\n").unwrap();
    fs::write(dir.join("gen-00000003/manifest.json"), "[]").unwrap();
    assert_eq!(loaded(&store), good_state());

    // The next update removes the leftovers and numbers past the orphan.
    let status = run(&store, &[(URL, Ok(GOOD2.as_bytes()))], 2000);
    assert!(status.ok, "{status:?}");
    assert_eq!(status.generation.as_deref(), Some("gen-00000004"));
    assert_eq!(store.load().unwrap()[0].text, GOOD2);
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["current", "gen-00000001", "gen-00000004", "lists.json", "lock", "status.json"]);
}

#[test]
fn damaged_copy_is_reported_not_loaded() {
    let (_dir, store) = store();
    add(&store, "a", URL, Role::Block);
    let status = run(&store, &[(URL, Ok(GOOD.as_bytes()))], 1000);
    let generation = status.generation.unwrap();
    fs::write(store.dir().join(&generation).join("a.txt"), "evil.example\n").unwrap();
    let err = store.load().unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("differs from the manifest"));
    fs::write(store.dir().join("current"), "../etc\n").unwrap();
    assert!(matches!(store.load(), Err(StoreError::Corrupt { .. })));

    // An update still works: the failing list then has no copy to keep, the good one replaces the damage.
    assert!(run(&store, &[(URL, Ok(GOOD2.as_bytes()))], 2000).ok);
    assert_eq!(store.load().unwrap()[0].text, GOOD2);
}

#[test]
fn nothing_configured_is_ok_and_swaps_nothing() {
    let (_dir, store) = store();
    let status = run(&store, &[], 5);
    assert!(status.ok && !status.swapped && status.lists.is_empty() && status.generation.is_none());
}

/// Set in the environment of [`killed_writer_child`] to the store it keeps updating.
const CHILD_STORE: &str = "HUSHWALL_TEST_WRITER_STORE";

/// Two lists of about 400 kB each, so a swap spends a while writing.
fn big_list(tag: char) -> String {
    (0..20_000).map(|i| format!("{tag}{i:06}.writer.test\n")).collect()
}

/// Not a test by itself: the writer process that [`sigkill_at_random_moments_never_breaks_the_store`] kills.
#[test]
#[ignore = "child process of sigkill_at_random_moments_never_breaks_the_store"]
fn killed_writer_child() {
    let Ok(dir) = std::env::var(CHILD_STORE) else { return };
    let store = Store::new(dir);
    let (a, b) = (big_list('a'), big_list('b'));
    for n in 0u64.. {
        let text = if n % 2 == 0 { &b } else { &a };
        run(&store, &[(URL, Ok(text.as_bytes()))], n);
        println!("swapped");
    }
}

/// A real crash test: a writer process updating in a loop is SIGKILLed at random moments; every time, the store
/// loads, and holds one whole list or the other.
#[test]
fn sigkill_at_random_moments_never_breaks_the_store() {
    let (_dir, store) = store();
    add(&store, "a", URL, Role::Block);
    let (a, b) = (big_list('a'), big_list('b'));
    assert!(run(&store, &[(URL, Ok(a.as_bytes()))], 1).ok);
    let exe = std::env::current_exe().unwrap();
    let mut seed = u64::from(std::process::id()) | 1;
    let mut seen_b = false;
    for _ in 0..12 {
        let started = std::time::Instant::now();
        let mut child = std::process::Command::new(&exe)
            .args(["--exact", "lists::update::tests::killed_writer_child", "--ignored", "--nocapture", "-q"])
            .env(CHILD_STORE, store.dir())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the child's first swap, then kill it at a random moment of a later update (of about the same
        // duration).
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("swapped") {
            line.clear();
            assert_ne!(std::io::BufRead::read_line(&mut stdout, &mut line).unwrap(), 0, "the writer died early");
        }
        let one_update = started.elapsed().as_micros().max(1) as u64;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(seed % one_update));
        child.kill().unwrap();
        child.wait().unwrap();
        let lists = store.load().unwrap();
        assert_eq!(lists.len(), 1);
        assert!(lists[0].text == a || lists[0].text == b, "a half-written list was loaded");
        seen_b |= lists[0].text == b;
    }
    assert!(seen_b, "the writer never completed a swap; the test proved nothing");
    // The next update cleans up whatever the kills left.
    assert!(run(&store, &[(URL, Ok(GOOD.as_bytes()))], 99).ok);
    let leftovers: Vec<_> = fs::read_dir(store.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn store_files_are_private_whatever_the_umask() {
    use std::os::unix::fs::MetadataExt;
    let (_dir, store) = store();
    add(&store, "a", URL, Role::Block);
    run(&store, &[(URL, Ok(GOOD.as_bytes()))], 100);
    assert!(store.status().unwrap().is_some());
    let mut checked = 0;
    let mut dirs = vec![store.dir().to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let meta = entry.as_ref().unwrap().metadata().unwrap();
            if meta.is_dir() {
                dirs.push(entry.unwrap().path());
            } else {
                assert_eq!(meta.mode() & 0o777, 0o600, "{}", entry.unwrap().path().display());
                checked += 1;
            }
        }
    }
    // lists.json, current, status.json, lock, the generation's manifest and list copy.
    assert!(checked >= 6, "{checked} files");
}

#[test]
fn store_refuses_a_symlink_planted_in_it() {
    let (dir, store) = store();
    add(&store, "a", URL, Role::Block);
    let target = dir.path().join("elsewhere");
    fs::write(&target, "precious").unwrap();
    // Temporaries are swept before each update; the lock file is opened as it is.
    fs::remove_file(store.dir().join("lock")).unwrap();
    std::os::unix::fs::symlink(&target, store.dir().join("lock")).unwrap();
    let mut fetcher = Prefetched::new();
    fetcher.insert(URL, Ok(GOOD.as_bytes().to_vec()));
    let err = update(&store, &mut fetcher, &[], at(100)).expect_err("the planted link must be refused");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(fs::read_to_string(&target).unwrap(), "precious");
}
