//! `verify`, `open_check` and crash-safe publication of an index directory.

mod format_support;

use std::path::Path;

use format_support::*;
use m3::format::files::*;
use m3::format::header::COMMON_HEADER_BYTES;
use m3::format::verify::*;
use m3::format::*;

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0x10;
    std::fs::write(path, b).unwrap();
}

#[test]
fn format_verify_accepts_a_fresh_index() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("idx");
    let m = publish_index(&target);
    let r = verify(&target).unwrap();
    assert_eq!(r.files, 6);
    assert_eq!(r.data_sectors, 6);
    assert_eq!(r.manifest, m);
    assert_eq!(r.bytes, m.files.iter().map(|f| f.bytes).sum::<u64>());
    assert_eq!(open_check(&target).unwrap(), m);
    // Nothing but the index is left beside it.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["idx"]);
}

#[test]
fn format_verify_catches_every_flipped_body_byte_class() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("idx");
    publish_index(&target);
    for name in [
        CLUSTERS_FILE,
        ROUTING_FILE,
        STATS_FILE,
        PQ_FILE,
        SECTORS_FILE,
    ] {
        let p = target.join(name);
        let len = std::fs::metadata(&p).unwrap().len() as usize;
        let hb = header_bytes(&std::fs::read(&p).unwrap());
        for at in [hb, (hb + len) / 2, len - 1] {
            flip(&p, at);
            match verify(&target) {
                Err(FormatError::Checksum { path, what, .. }) => {
                    assert_eq!(path, p);
                    assert_eq!(what, "whole file");
                }
                other => panic!("{name} byte {at}: {other:?}"),
            }
            // open_check reads no bodies.
            open_check(&target).unwrap();
            flip(&p, at);
        }
        verify(&target).unwrap();
    }
    // data.m3: the error names the first bad sector.
    let p = target.join(DATA_FILE);
    for (sector, byte) in [(0usize, 0usize), (3, 4095), (5, 17)] {
        let at = (sector + 1) * SECTOR_BYTES + byte;
        flip(&p, at);
        match verify(&target) {
            Err(FormatError::Checksum { path, what, .. }) => {
                assert_eq!(path, p);
                assert_eq!(what, format!("sector {sector}"));
            }
            other => panic!("data sector {sector}: {other:?}"),
        }
        flip(&p, at);
    }
    flip(&p, 1000); // header-sector padding: only the whole-file CRC sees it
    assert!(
        matches!(verify(&target), Err(FormatError::Checksum { what, .. }) if what == "whole file")
    );
    flip(&p, 1000);
    // Two bad sectors: the first is reported.
    flip(&p, 5 * SECTOR_BYTES);
    flip(&p, 2 * SECTOR_BYTES);
    assert!(
        matches!(verify(&target), Err(FormatError::Checksum { what, .. }) if what == "sector 1")
    );
}

#[test]
fn format_missing_or_short_files_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("idx");
    publish_index(&target);
    assert!(matches!(
        verify(tmp.path()),
        Err(FormatError::NotAnIndex { .. })
    ));
    assert!(matches!(
        open_check(tmp.path()),
        Err(FormatError::NotAnIndex { .. })
    ));

    let pq = target.join(PQ_FILE);
    let good = std::fs::read(&pq).unwrap();
    std::fs::write(&pq, &good[..good.len() - 4]).unwrap();
    for r in [open_check(&target).map(drop), verify(&target).map(drop)] {
        assert!(
            matches!(r, Err(FormatError::Truncated { ref path, .. }) if *path == pq),
            "{r:?}"
        );
    }
    std::fs::remove_file(&pq).unwrap();
    assert!(matches!(open_check(&target), Err(FormatError::Io { .. })));
    std::fs::write(&pq, &good).unwrap();
    verify(&target).unwrap();

    // A manifest that does not list a required file.
    let mpath = target.join(MANIFEST_FILE);
    let mut m = Manifest::read(&mpath).unwrap();
    m.files.retain(|f| f.name_str() != Some(STATS_FILE));
    m.write(&mpath).unwrap();
    assert!(matches!(verify(&target), Err(FormatError::Corrupt { .. })));
    // A manifest whose listing disagrees with the data header.
    m = publish_index(&target);
    m.meta.data_sectors += 1;
    m.write(&mpath).unwrap();
    assert!(matches!(
        open_check(&target),
        Err(FormatError::Corrupt { .. })
    ));
    // A path-traversal name in an entry (CRC fixed) is refused.
    m = publish_index(&target);
    let mut bytes = std::fs::read(&mpath).unwrap();
    let first_entry = COMMON_HEADER_BYTES + 104;
    bytes[first_entry..first_entry + 3].copy_from_slice(b"../");
    fix_crc(&mut bytes);
    std::fs::write(&mpath, &bytes).unwrap();
    assert!(matches!(
        Manifest::read(&mpath),
        Err(FormatError::Corrupt { .. })
    ));
    let _ = m;
}

/// A writer's process crashing: its files stay on disk as they are (a crash runs no
/// destructor, which would remove them). The process goes on here, so the writer is dropped
/// with its temporary directory moved aside and put back: the files remain and the writer's
/// in-process claim on the target is released, as the end of a crashed process releases it.
fn crash(w: IndexDirWriter) {
    let dir = w.dir().to_path_buf();
    let aside = dir.with_extension("crashed");
    std::fs::rename(&dir, &aside).unwrap();
    drop(w);
    std::fs::rename(&aside, &dir).unwrap();
}

#[test]
fn format_publish_interrupted_before_rename_leaves_no_index() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("idx");
    // Crash after the files, before the manifest.
    let w = IndexDirWriter::create(&target).unwrap();
    let m = write_files(&w);
    crash(w);
    assert!(!target.exists());
    assert!(matches!(
        open_check(&target),
        Err(FormatError::NotAnIndex { .. })
    ));
    // Crash after the manifest, before the rename.
    let w = IndexDirWriter::create(&target).unwrap();
    write_files(&w);
    w.write_manifest(&m).unwrap();
    let tmp_dir = w.dir().to_path_buf();
    crash(w);
    assert!(!target.exists());
    assert!(tmp_dir.join(MANIFEST_FILE).exists());
    // Without a previous index the publication commits at its rename: nothing to restore
    // (and this process's own temporary is left alone).
    let report = recover_index_dir(&target).unwrap();
    assert_eq!(report.restored, None);
    assert_eq!(report.in_progress.len(), 1, "{report:?}");
    assert!(!target.exists());
    // An aborted (dropped) writer cleans up after itself.
    let w = IndexDirWriter::create(&target).unwrap();
    let d = w.dir().to_path_buf();
    assert!(d.exists());
    drop(w);
    assert!(!d.exists());
}

#[test]
fn format_publish_replaces_an_existing_index_atomically() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("idx");
    let old = publish_index(&target);

    // A new build that crashes before its rename leaves the old index intact and openable.
    let w = IndexDirWriter::create(&target).unwrap();
    let mut m = write_files(&w);
    m.meta.seed = 4242;
    w.write_manifest(&m).unwrap();
    crash(w);
    assert_eq!(verify(&target).unwrap().manifest, old);

    // A crash between the two renames of a process that is gone, whose new index is not
    // there: the old index sits at `<out>.old-<pid>`; recovery moves it back.
    let aside = tmp.path().join(format!("idx.old-{}", dead_pid()));
    std::fs::rename(&target, &aside).unwrap();
    assert!(matches!(
        open_check(&target),
        Err(FormatError::NotAnIndex { .. })
    ));
    let report = recover_index_dir(&target).unwrap();
    assert!(
        matches!(report.restored, Some(Restored::RolledBack { .. })),
        "{report:?}"
    );
    assert_eq!(verify(&target).unwrap().manifest, old);
    assert!(!aside.exists());

    // A complete replacement.
    let w = IndexDirWriter::create(&target).unwrap();
    let mut m = write_files(&w);
    m.meta.seed = 4243;
    w.publish(&m).unwrap();
    assert_eq!(verify(&target).unwrap().manifest.meta.seed, 4243);
    assert!(!aside.exists());
    // Leftover `.old-*` and `.tmp-*` beside a complete index are removed when their process
    // is gone, kept while it runs (pid 1 always does).
    let dead = dead_pid();
    for name in [
        format!("idx.old-{dead}"),
        format!("idx.tmp-{dead}"),
        "idx.old-1".into(),
        "idx.tmp-1".into(),
    ] {
        std::fs::create_dir(tmp.path().join(name)).unwrap();
    }
    let report = recover_index_dir(&target).unwrap();
    assert_eq!(report.restored, None);
    assert_eq!(report.removed.len(), 2, "{report:?}");
    assert!(!tmp.path().join(format!("idx.old-{dead}")).exists());
    assert!(!tmp.path().join(format!("idx.tmp-{dead}")).exists());
    assert!(tmp.path().join("idx.old-1").exists());
    assert!(tmp.path().join("idx.tmp-1").exists());
    verify(&target).unwrap();
}

/// The id of a process that has exited (and been reaped).
fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}
