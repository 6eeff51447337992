//! Journal: append and replay, compaction, torn and corrupt tails, empty,
//! absent and stale files.

use super::*;

const EXAMPLE: &str = include_str!("../../../examples/appliance.toml");

fn example() -> ApplianceConfig {
    ApplianceConfig::from_toml_str(EXAMPLE).unwrap()
}

fn paths(dir: &tempfile::TempDir) -> StorePaths {
    StorePaths::next_to(&dir.path().join("vpnd.toml"))
}

fn cgw(i: usize) -> CustomerGateway {
    CustomerGateway {
        id: format!("cgw-j{i}"),
        ip_address: Some(std::net::IpAddr::from([
            203,
            0,
            113,
            u8::try_from(i % 250).unwrap(),
        ])),
        bgp_asn: Some(65001),
        certificate: None,
        device_name: Some(format!("device {i}")),
    }
}

fn put(i: usize) -> Change {
    Change::PutCustomerGateway {
        customer_gateway: cgw(i),
    }
}

/// A store with `n` journaled changes; the config they give, and the
/// journal's length before the last one.
fn store_with(dir: &tempfile::TempDir, n: usize) -> (ApplianceConfig, u64) {
    let mut config = example();
    let mut j = Journal::create(paths(dir), &config).unwrap();
    let mut before_last = 0;
    for i in 0..n {
        before_last = j.len;
        let c = put(i);
        j.append(&c).unwrap();
        config.apply_change(&c);
    }
    (config, before_last)
}

fn open(dir: &tempfile::TempDir) -> (Journal, ApplianceConfig, OpenReport) {
    Journal::open(paths(dir)).unwrap().expect("a store")
}

#[test]
fn no_snapshot_is_no_store() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!paths(&dir).exists());
    assert!(Journal::open(paths(&dir)).unwrap().is_none());
}

#[test]
fn changes_are_replayed_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, _) = store_with(&dir, 3);
    // Replace, then delete, in the journal too.
    let (mut j, c, r) = open(&dir);
    assert_eq!(c, config);
    assert_eq!(
        (r.replayed, r.dropped_tail, r.journal_reset),
        (3, None, false)
    );
    let mut g = cgw(1);
    g.device_name = Some("renamed".into());
    for change in [
        Change::PutCustomerGateway {
            customer_gateway: g,
        },
        Change::DeleteCustomerGateway {
            id: "cgw-j0".into(),
        },
    ] {
        j.append(&change).unwrap();
        config.apply_change(&change);
    }
    drop(j);
    let (j, c, r) = open(&dir);
    assert_eq!(c, config);
    assert_eq!(r.replayed, 5);
    assert_eq!(j.records(), 5);
    let ids: Vec<&str> = c.customer_gateways.iter().map(|g| g.id.as_str()).collect();
    assert!(
        !ids.contains(&"cgw-j0") && ids.contains(&"cgw-j1"),
        "{ids:?}"
    );
    let g1 = c
        .customer_gateways
        .iter()
        .find(|g| g.id == "cgw-j1")
        .unwrap();
    assert_eq!(g1.device_name.as_deref(), Some("renamed"));
}

#[test]
fn connections_round_trip_through_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = example();
    let mut j = Journal::create(paths(&dir), &config).unwrap();
    let mut conn = config.connections[0].clone();
    conn.id = "vpn-journal".into();
    conn.static_routes.push("10.99.0.0/16".parse().unwrap());
    for change in [
        Change::PutConnection {
            connection: Box::new(conn),
        },
        Change::DeleteConnection {
            id: config.connections[0].id.clone(),
        },
    ] {
        j.append(&change).unwrap();
        config.apply_change(&change);
    }
    let (_, c, _) = open(&dir);
    assert_eq!(c, config);
    // Keys and generated values survive (JSON carries the whole value).
    assert_eq!(
        c.connections.last().unwrap().tunnels[0].pre_shared_key,
        config.connections.last().unwrap().tunnels[0].pre_shared_key
    );
}

#[test]
fn compaction_writes_a_snapshot_and_empties_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, _) = store_with(&dir, 4);
    let (mut j, _, _) = open(&dir);
    j.set_compact_min_bytes(0);
    assert!(
        !j.wants_compaction(),
        "the journal is shorter than the snapshot"
    );
    let mut i = 4;
    while !j.wants_compaction() {
        let c = put(i);
        j.append(&c).unwrap();
        config.apply_change(&c);
        i += 1;
    }
    j.compact(&config).unwrap();
    assert_eq!(j.generation(), 2);
    assert_eq!(j.records(), 0);
    assert_eq!(fs::read(&paths(&dir).journal).unwrap().len(), 16);
    let c = put(1000);
    j.append(&c).unwrap();
    config.apply_change(&c);
    let (j, reopened, r) = open(&dir);
    assert_eq!(reopened, config);
    assert_eq!((r.generation, r.replayed, r.journal_reset), (2, 1, false));
    assert_eq!(j.generation(), 2);
    // No temp files are left.
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp.")), "{names:?}");
}

#[test]
fn a_compaction_interrupted_between_the_renames_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = store_with(&dir, 3);
    let p = paths(&dir);
    // The new snapshot is in place, the old journal (generation 1) too.
    Journal::write_snapshot(&p, 2, &config).unwrap();
    let (mut j, c, r) = open(&dir);
    assert_eq!(c, config);
    assert!(r.journal_reset);
    assert_eq!((r.generation, r.replayed), (2, 0));
    // And it takes appends again.
    j.append(&put(50)).unwrap();
    let (_, _, r) = open(&dir);
    assert_eq!((r.replayed, r.journal_reset), (1, false));
}

#[test]
fn a_failed_journal_after_the_snapshot_is_not_appended_to() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, _) = store_with(&dir, 2);
    let (mut j, _, _) = open(&dir);
    // The snapshot of generation 2 is written; the fresh journal is not
    // (simulated): the old file must not take the next change.
    let p = paths(&dir);
    Journal::write_snapshot(&p, 2, &config).unwrap();
    j.generation = 2;
    j.stale = true;
    let c = put(7);
    j.append(&c).unwrap();
    config.apply_change(&c);
    let (_, reopened, r) = open(&dir);
    assert_eq!(reopened, config, "the change after the failed step is kept");
    assert_eq!((r.generation, r.replayed), (2, 1));
}

#[test]
fn a_torn_last_record_is_dropped_at_every_byte_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (full, before_last) = store_with(&dir, 3);
    let p = paths(&dir);
    let bytes = fs::read(&p.journal).unwrap();
    let mut two = full.clone();
    two.apply_change(&Change::DeleteCustomerGateway {
        id: "cgw-j2".into(),
    });
    let start = usize::try_from(before_last).unwrap();
    for cut in start..bytes.len() {
        fs::write(&p.journal, &bytes[..cut]).unwrap();
        let (mut j, c, r) = open(&dir);
        assert_eq!(c, two, "cut at {cut}");
        assert_eq!(r.replayed, 2, "cut at {cut}");
        if cut == start {
            assert_eq!(r.dropped_tail, None);
        } else {
            let t = r.dropped_tail.expect("dropped");
            assert_eq!((t.offset, t.bytes), (before_last, (cut - start) as u64));
            let want = if cut - start < FRAME_HEADER_LEN {
                TailProblem::ShortHeader
            } else {
                TailProblem::ShortPayload
            };
            assert_eq!(t.reason, want, "cut at {cut}");
        }
        // The file is cut back to the last whole record, and appends
        // continue from there.
        assert_eq!(fs::metadata(&p.journal).unwrap().len(), before_last);
        j.append(&put(2)).unwrap();
        let (_, c, r) = open(&dir);
        assert_eq!((c, r.replayed, r.dropped_tail), (full.clone(), 3, None));
    }
}

#[test]
fn a_checksum_mismatch_drops_the_record_and_what_follows() {
    let dir = tempfile::tempdir().unwrap();
    let (full, before_last) = store_with(&dir, 3);
    let p = paths(&dir);
    let bytes = fs::read(&p.journal).unwrap();
    let last = usize::try_from(before_last).unwrap();
    // One flipped bit in the payload, in the checksum, in the length.
    for (at, want) in [
        (bytes.len() - 3, TailProblem::Checksum),
        (last + 5, TailProblem::Checksum),
        (last + 3, TailProblem::BadLength),
    ] {
        let mut b = bytes.clone();
        b[at] ^= if want == TailProblem::BadLength {
            0x80
        } else {
            0x01
        };
        fs::write(&p.journal, &b).unwrap();
        let (_, c, r) = open(&dir);
        let t = r.dropped_tail.expect("dropped");
        assert_eq!((t.offset, t.reason), (before_last, want), "flip at {at}");
        assert_eq!(r.replayed, 2);
        assert_ne!(c, full);
    }
    // A record whose checksum matches but that is not a change.
    let mut b = bytes[..last].to_vec();
    b.extend_from_slice(&frame(b"{\"op\":\"nonsense\"}"));
    fs::write(&p.journal, &b).unwrap();
    let (_, _, r) = open(&dir);
    assert_eq!(
        r.dropped_tail.map(|t| t.reason),
        Some(TailProblem::Undecodable)
    );
}

#[test]
fn empty_and_absent_journals_start_empty_and_damaged_snapshots_refuse() {
    let dir = tempfile::tempdir().unwrap();
    store_with(&dir, 2);
    let p = paths(&dir);
    // Absent journal: the snapshot alone (the changes are lost with the
    // file; this is outside damage, reported as a reset).
    let snapshot_only = example();
    fs::remove_file(&p.journal).unwrap();
    let (_, c, r) = open(&dir);
    assert!(r.journal_reset);
    assert_eq!(c, snapshot_only);
    // Empty journal file: the same.
    fs::write(&p.journal, b"").unwrap();
    let (mut j, _, r) = open(&dir);
    assert!(r.journal_reset);
    let ch = put(9);
    j.append(&ch).unwrap();
    let mut config = snapshot_only.clone();
    config.apply_change(&ch);
    assert_eq!(open(&dir).1, config);
    // A journal of a later generation cannot come from a crash.
    fs::write(&p.journal, header(JOURNAL_MAGIC, 7)).unwrap();
    assert!(matches!(
        Journal::open(p.clone()),
        Err(JournalError::CorruptJournal { .. })
    ));
    // Damaged snapshots: empty, bad magic, flipped byte, trailing bytes.
    let good = fs::read(&p.snapshot).unwrap();
    let mut flipped = good.clone();
    let n = flipped.len();
    flipped[n - 10] ^= 1;
    let mut trailing = good.clone();
    trailing.push(b'x');
    for bad in [
        Vec::new(),
        b"vpnjrnl1\0\0\0\0\0\0\0\x01".to_vec(),
        flipped,
        trailing,
    ] {
        fs::write(&p.snapshot, &bad).unwrap();
        let e = Journal::open(p.clone()).unwrap_err();
        assert!(matches!(e, JournalError::CorruptSnapshot { .. }), "{e}");
        assert!(e.to_string().contains("vpnd.snapshot"), "{e}");
    }
}

#[test]
fn a_failed_append_leaves_no_partial_record() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = store_with(&dir, 1);
    let (mut j, _, _) = open(&dir);
    j.fail_appends();
    assert!(j.append(&put(5)).is_err());
    let (_, c, r) = open(&dir);
    assert_eq!((c, r.replayed, r.dropped_tail), (config, 1, None));
}

#[test]
fn files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    store_with(&dir, 1);
    let p = paths(&dir);
    for f in [&p.snapshot, &p.journal] {
        let mode = fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, FILE_MODE, "{}", f.display());
    }
}
