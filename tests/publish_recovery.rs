//! Publishing never destroys what is not an index, and recovery after a kill at every step of
//! a publication leaves the complete old index or the complete new one (`docs/FORMAT.md`,
//! "Publishing" and "Recovery"): the library (`check_target`, `IndexDirWriter`,
//! `recover_index_dir`) and the `m3` binary, which recovers before it opens or builds.
//!
//! A kill is simulated by stopping the real publication after a step
//! (`IndexDirWriter::publish_then_crash`) with its temporaries named after a process that has
//! exited; the real SIGKILL of `m3 build` is in `tests/build_index.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

use m3::build::{BuildError, BuildParams, Silent, build_index};
use m3::data::DType;
use m3::distance::Metric;
use m3::format::files::MANIFEST_FILE;
use m3::format::publish::PublishStep;
use m3::format::recover::{TempKind, process_alive, temporaries};
use m3::format::{
    FormatError, IndexDirWriter, Restored, TargetState, check_target, open_check,
    recover_index_dir, verify,
};
use m3::io::{IoBackend, ReaderOptions};
use m3::search::Index;
use m3::synth::gauss::{GaussModel, GaussParams};
use m3::synth::{SplitSizes, WriteSpec, WrittenFiles, write_dataset};

fn pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
}

fn gauss_set(dir: &Path, n: u64, seed: u64) -> WrittenFiles {
    let model = GaussModel::new(
        GaussParams {
            dim: 16,
            clusters: 8,
            seed,
            ..GaussParams::default()
        },
        SplitSizes {
            base: n,
            queries: 10,
            training: 0,
        },
    )
    .unwrap();
    let spec = WriteSpec {
        out_dir: dir.to_path_buf(),
        dtype: DType::F32,
        batch_chunks: 4,
    };
    write_dataset(&model, &spec, &pool()).unwrap()
}

fn small_params(base: &Path, out: &Path) -> BuildParams {
    let mut p = BuildParams::new(base.to_path_buf(), Metric::L2, out.to_path_buf());
    p.clusters.target_size = 64;
    p.pq.subspaces = Some(4);
    p.pq.iters = 4;
    p.graph.max_degree = 8;
    p.graph.candidates = 16;
    p
}

/// Two different small indexes, A and B, built once per test.
struct Pair {
    _tmp: tempfile::TempDir,
    base_a: PathBuf,
    queries_a: PathBuf,
    a: PathBuf,
    b: PathBuf,
}

fn pair() -> Pair {
    let tmp = tempfile::tempdir().unwrap();
    let set_a = gauss_set(&tmp.path().join("data-a"), 600, 1);
    let set_b = gauss_set(&tmp.path().join("data-b"), 900, 2);
    let a = tmp.path().join("index-a");
    let b = tmp.path().join("index-b");
    build_index(&small_params(&set_a.base, &a), &pool(), &Silent).unwrap();
    build_index(&small_params(&set_b.base, &b), &pool(), &Silent).unwrap();
    Pair {
        base_a: set_a.base,
        queries_a: set_a.queries,
        _tmp: tmp,
        a,
        b,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The id of a process that has exited (and been reaped).
fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    assert!(!process_alive(pid), "pid {pid} was reused at once");
    pid
}

fn manifest_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join(MANIFEST_FILE)).unwrap()
}

/// Which complete index is at `out`: "A", "B" or "none"; checks that it opens and verifies.
fn index_at(out: &Path, pair: &Pair) -> &'static str {
    if !out.exists() {
        assert!(matches!(
            open_check(out),
            Err(FormatError::NotAnIndex { .. })
        ));
        return "none";
    }
    verify(out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    Index::open(out, IoBackend::Pread, &ReaderOptions::default()).unwrap();
    let m = manifest_bytes(out);
    if m == manifest_bytes(&pair.a) {
        "A"
    } else if m == manifest_bytes(&pair.b) {
        "B"
    } else {
        panic!("{} holds neither A nor B", out.display())
    }
}

/// Where a simulated kill stops the build of B into `out`.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// Right after the temporary directory was made.
    Created,
    /// After some of the files were written.
    SomeFiles,
    /// After a step of the publication.
    After(PublishStep),
    /// During step 6: the old index partly removed, `remove_first` of its files gone.
    OldPartlyRemoved { manifest_first: bool },
}

/// Runs the build of B into `out` as process `pid` and stops it at `kill`, the way a kill
/// would: nothing is cleaned up. Also leaves an external-sort scratch directory.
fn crashed_publish(pair: &Pair, out: &Path, pid: u32, kill: Kill) {
    let w = IndexDirWriter::create_for_pid(out, pid).unwrap();
    let sort = PathBuf::from(format!("{}.sort-{pid}", out.display()));
    std::fs::create_dir(&sort).unwrap();
    std::fs::write(sort.join("run-00000.zst"), b"zstd run").unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&pair.b)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with(MANIFEST_FILE))
        .collect();
    files.sort();
    if matches!(kill, Kill::Created) {
        return w.crash();
    }
    if matches!(kill, Kill::SomeFiles) {
        files.truncate(files.len() / 2);
    }
    for f in &files {
        std::fs::copy(f, w.path(f.file_name().unwrap().to_str().unwrap())).unwrap();
    }
    let manifest = open_check(&pair.b).unwrap();
    match kill {
        Kill::Created => unreachable!(),
        Kill::SomeFiles => w.crash(),
        Kill::After(step) => {
            w.publish_then_crash(&manifest, step).unwrap();
        }
        Kill::OldPartlyRemoved { manifest_first } => {
            w.publish_then_crash(&manifest, PublishStep::NewInPlace)
                .unwrap();
            let old = PathBuf::from(format!("{}.old-{pid}", out.display()));
            if old.exists() {
                let mut names: Vec<PathBuf> = std::fs::read_dir(&old)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
                names.sort_by_key(|p| (p.ends_with(MANIFEST_FILE) != manifest_first, p.clone()));
                for p in names.iter().take(3) {
                    std::fs::remove_file(p).unwrap();
                }
            }
        }
    }
}

/// A kill after every step of the publication, with and without a previous index: recovery
/// leaves the complete old index (kill before the old one was moved aside; for a first build,
/// no index before step 5) or the complete new one (kill after), which opens and verifies, and
/// no temporary of the dead process.
#[test]
fn publish_recovery_after_a_kill_at_every_step() {
    let pair = pair();
    let kills = [
        (Kill::Created, "old"),
        (Kill::SomeFiles, "old"),
        (Kill::After(PublishStep::ManifestWritten), "old"),
        (Kill::After(PublishStep::OldMovedAside), "new"),
        (Kill::After(PublishStep::NewInPlace), "new"),
        (
            Kill::OldPartlyRemoved {
                manifest_first: true,
            },
            "new",
        ),
        (
            Kill::OldPartlyRemoved {
                manifest_first: false,
            },
            "new",
        ),
        (Kill::After(PublishStep::OldRemoved), "new"),
    ];
    let work = tempfile::tempdir().unwrap();
    for with_old in [true, false] {
        for (kill, expect) in kills {
            let case = format!("{kill:?}, previous index: {with_old}");
            let out = work
                .path()
                .join(format!("idx-{with_old}-{kill:?}").replace(' ', ""));
            if with_old {
                copy_dir(&pair.a, &out);
            }
            let pid = dead_pid();
            crashed_publish(&pair, &out, pid, kill);
            let report = recover_index_dir(&out).unwrap();
            // Without a previous index step 4 does nothing: the build commits at step 5.
            let first_build_before_5 =
                !with_old && matches!(kill, Kill::After(PublishStep::OldMovedAside));
            let want = match (expect, with_old) {
                ("old", true) => "A",
                ("old", false) => "none",
                _ if first_build_before_5 => "none",
                _ => "B",
            };
            assert_eq!(index_at(&out, &pair), want, "{case}: {report:?}");
            // Rolled forward exactly when the kill came between the two renames.
            let between = matches!(kill, Kill::After(PublishStep::OldMovedAside)) && with_old;
            assert_eq!(
                matches!(report.restored, Some(Restored::RolledForward { .. })),
                between,
                "{case}: {report:?}"
            );
            assert!(report.kept.is_empty(), "{case}: {report:?}");
            assert_eq!(temporaries(&out).unwrap(), vec![], "{case}: {report:?}");
            // Recovery is idempotent.
            assert!(recover_index_dir(&out).unwrap().is_clean(), "{case}");
        }
    }
}

/// Between the renames, a new index that is not complete (which the publication order
/// rules out, but a disk may not) is not moved in: the old one is moved back.
#[test]
fn publish_recovery_rolls_back_when_the_new_index_is_incomplete() {
    let pair = pair();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("idx");
    copy_dir(&pair.a, &out);
    let pid = dead_pid();
    crashed_publish(&pair, &out, pid, Kill::After(PublishStep::OldMovedAside));
    let tmp = PathBuf::from(format!("{}.tmp-{pid}", out.display()));
    std::fs::remove_file(tmp.join("pq.m3")).unwrap();
    let report = recover_index_dir(&out).unwrap();
    assert!(
        matches!(report.restored, Some(Restored::RolledBack { .. })),
        "{report:?}"
    );
    assert_eq!(index_at(&out, &pair), "A");
    assert_eq!(temporaries(&out).unwrap(), vec![]);
}

/// Temporaries of a running process are never touched; things recovery did not make (other
/// names, foreign files, the only copy of an index) are left and reported.
#[test]
fn publish_recovery_leaves_live_builds_and_foreign_things_alone() {
    let pair = pair();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("idx");
    copy_dir(&pair.a, &out);

    // A publication by a live process, stopped between its renames: nothing moves.
    let mut live = Command::new("sleep").arg("60").spawn().unwrap();
    let live_pid = live.id();
    crashed_publish(
        &pair,
        &out,
        live_pid,
        Kill::After(PublishStep::OldMovedAside),
    );
    let report = recover_index_dir(&out).unwrap();
    assert!(!out.exists());
    assert_eq!(report.restored, None);
    assert_eq!(report.in_progress.len(), 3, "{report:?}");
    assert!(report.in_progress.iter().all(|t| t.pid == live_pid));
    // Once it is gone, its publication is finished.
    live.kill().unwrap();
    live.wait().unwrap();
    let report = recover_index_dir(&out).unwrap();
    assert!(matches!(
        report.restored,
        Some(Restored::RolledForward { .. })
    ));
    assert_eq!(index_at(&out, &pair), "B");

    // Look-alike names are not temporaries; a dead temporary holding a user's file is kept.
    let look_alikes = ["idx.old-backup", "idx.tmp-12a", "idx.tmp-", "idx.old-1.bak"];
    for n in look_alikes {
        copy_dir(&pair.a, &work.path().join(n));
    }
    let pid = dead_pid();
    let foreign_tmp = work.path().join(format!("idx.tmp-{pid}"));
    std::fs::create_dir(&foreign_tmp).unwrap();
    std::fs::write(foreign_tmp.join("keep.txt"), b"precious").unwrap();
    let foreign_sort = work.path().join(format!("idx.sort-{pid}"));
    std::fs::create_dir(&foreign_sort).unwrap();
    std::fs::write(foreign_sort.join("notes"), b"precious").unwrap();
    let report = recover_index_dir(&out).unwrap();
    assert_eq!(report.removed, Vec::<PathBuf>::new());
    assert_eq!(report.kept.len(), 2, "{report:?}");
    assert!(foreign_tmp.join("keep.txt").exists() && foreign_sort.join("notes").exists());
    for n in look_alikes {
        assert_eq!(index_at(&work.path().join(n), &pair), "A", "{n}");
    }
    std::fs::remove_dir_all(&foreign_tmp).unwrap();
    std::fs::remove_dir_all(&foreign_sort).unwrap();

    // An old index beside a target that is not an index may be the only copy: kept.
    let other = work.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("keep.txt"), b"precious").unwrap();
    let old = work.path().join(format!("other.old-{}", dead_pid()));
    copy_dir(&pair.a, &old);
    let report = recover_index_dir(&other).unwrap();
    assert_eq!(report.kept.len(), 1, "{report:?}");
    assert_eq!(index_at(&old, &pair), "A");
    assert!(other.join("keep.txt").exists());
    let kinds: Vec<TempKind> = temporaries(&other)
        .unwrap()
        .iter()
        .map(|t| t.kind)
        .collect();
    assert_eq!(kinds, [TempKind::Old]);
}

/// Publishing replaces an index or an empty directory, nothing else: every other target is
/// refused before any work, naming the path, and left exactly as it was.
#[test]
fn publish_refuses_targets_that_are_not_an_index() {
    let pair = pair();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let refused = |target: &Path, inputs: &[&Path], says: &str| {
        let e = check_target(target, inputs).unwrap_err();
        assert!(matches!(e, FormatError::Refused { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains(&target.display().to_string()), "{msg}");
        assert!(msg.contains(says), "{msg}");
        assert!(!msg.contains("  "), "{msg}");
    };
    // A directory with a user's file and a sub-directory.
    let odir = w.join("odir");
    std::fs::create_dir_all(odir.join("sub")).unwrap();
    std::fs::write(odir.join("keep.txt"), b"precious").unwrap();
    refused(&odir, &[], "not part of an M³ index");
    // An index with a user's file added.
    let index_plus = w.join("index-plus");
    copy_dir(&pair.a, &index_plus);
    std::fs::write(index_plus.join("notes.txt"), b"mine").unwrap();
    refused(&index_plus, &[], "notes.txt");
    // A manifest.m3 that is not an M³ manifest.
    let fake = w.join("fake");
    std::fs::create_dir(&fake).unwrap();
    std::fs::write(fake.join(MANIFEST_FILE), b"not a manifest at all").unwrap();
    refused(&fake, &[], "manifest.m3");
    // Index files without a manifest.
    let partial = w.join("partial");
    copy_dir(&pair.a, &partial);
    std::fs::remove_file(partial.join(MANIFEST_FILE)).unwrap();
    refused(&partial, &[], "no manifest");
    // A regular file, a symbolic link, a missing parent.
    let file = w.join("file.bin");
    std::fs::write(&file, b"precious").unwrap();
    refused(&file, &[], "a file");
    let link = w.join("link");
    std::os::unix::fs::symlink(&pair.a, &link).unwrap();
    refused(&link, &[], "symbolic link");
    refused(&w.join("no-such-dir/idx"), &[], "no-such-dir");
    refused(Path::new("."), &[], "needs a name");
    // An input at or inside the target, even when the target is an index.
    let holder = w.join("holder");
    copy_dir(&pair.a, &holder);
    let input = holder.join("clusters.m3");
    refused(&holder, &[&input], "holds the input");
    refused(&input, &[&input], "is the input");
    // What may be replaced.
    assert_eq!(
        check_target(&w.join("new"), &[]).unwrap(),
        TargetState::Missing
    );
    std::fs::create_dir(w.join("empty")).unwrap();
    assert_eq!(
        check_target(&w.join("empty"), &[]).unwrap(),
        TargetState::Empty
    );
    assert_eq!(
        check_target(&pair.a, &[&pair.base_a]).unwrap(),
        TargetState::Index
    );

    // The build refuses before any work and leaves everything as it was.
    for (target, base) in [
        (odir.clone(), pair.base_a.clone()),
        (file.clone(), pair.base_a.clone()),
        // --out set to the folder holding the base.
        (
            pair.base_a.parent().unwrap().to_path_buf(),
            pair.base_a.clone(),
        ),
    ] {
        let before = snapshot(w);
        let e = build_index(&small_params(&base, &target), &pool(), &Silent).unwrap_err();
        assert!(
            matches!(e, BuildError::Format(FormatError::Refused { .. })),
            "{}: {e:?}",
            target.display()
        );
        assert_eq!(snapshot(w), before, "{}", target.display());
    }
    assert_eq!(std::fs::read(odir.join("keep.txt")).unwrap(), b"precious");

    // A trailing slash names the same directory: its temporaries go beside it, not inside.
    let slash = w.join("slash");
    let mut with_slash = slash.clone().into_os_string();
    with_slash.push("/");
    build_index(
        &small_params(&pair.base_a, Path::new(&with_slash)),
        &pool(),
        &Silent,
    )
    .unwrap();
    build_index(
        &small_params(&pair.base_a, Path::new(&with_slash)),
        &pool(),
        &Silent,
    )
    .unwrap();
    verify(&slash).unwrap();
    assert!(
        std::fs::read_dir(&slash)
            .unwrap()
            .all(|e| e.unwrap().file_type().unwrap().is_file())
    );
    assert_eq!(temporaries(&slash).unwrap(), vec![]);
}

/// Every path under `dir` with its bytes (files) or `None` (directories, links).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let t = std::fs::symlink_metadata(&p).unwrap().file_type();
            if t.is_dir() {
                stack.push(p.clone());
                out.push((p, None));
            } else if t.is_file() {
                let bytes = std::fs::read(&p).unwrap();
                out.push((p, Some(bytes)));
            } else {
                out.push((p, None));
            }
        }
    }
    out.sort();
    out
}

fn m3(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_m3"))
        .args(args)
        .output()
        .unwrap()
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// `m3 build --out` refuses what is not an index before any work (no stage starts), naming
/// the path, and leaves it as it was.
#[test]
fn cli_build_refuses_an_out_that_is_not_an_index() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let set = gauss_set(&w.join("data"), 600, 1);
    let odir = w.join("odir");
    std::fs::create_dir_all(odir.join("sub")).unwrap();
    std::fs::write(odir.join("keep.txt"), b"precious\n").unwrap();
    let file = w.join("out.file");
    std::fs::write(&file, b"precious\n").unwrap();
    let data_dir = set.base.parent().unwrap().to_path_buf();
    for out in [&odir, &file, &data_dir, &set.base] {
        let before = snapshot(w);
        let o = m3(&[
            os("build"),
            os("--base"),
            set.base.as_os_str(),
            os("--metric"),
            os("l2"),
            os("--out"),
            out.as_os_str(),
        ]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{}: {stderr}", out.display());
        assert!(
            stderr.contains(&out.display().to_string()) && stderr.contains("refusing"),
            "{stderr}"
        );
        assert!(!stderr.contains("m3 build: scan"), "work started: {stderr}");
        assert_eq!(snapshot(w), before, "{}", out.display());
    }
}

/// Every command that opens or builds an index recovers first: a publication killed between
/// its renames is finished, and the dead process's temporaries are removed.
#[test]
fn cli_commands_recover_an_interrupted_publication() {
    let pair = pair();
    let work = tempfile::tempdir().unwrap();
    let queries = pair.queries_a.clone();
    let out = work.path().join("idx");
    let commands: [(&str, Vec<&std::ffi::OsStr>); 5] = [
        ("verify", vec![os("verify"), out.as_os_str()]),
        ("inspect", vec![os("inspect"), out.as_os_str()]),
        (
            "search",
            vec![
                os("search"),
                os("--index"),
                out.as_os_str(),
                os("--queries"),
                queries.as_os_str(),
                os("--threads"),
                os("1"),
            ],
        ),
        (
            "range",
            vec![
                os("range"),
                os("--index"),
                out.as_os_str(),
                os("--queries"),
                queries.as_os_str(),
                os("--radius"),
                os("0.5"),
                os("--threads"),
                os("1"),
            ],
        ),
        (
            "build",
            vec![
                os("build"),
                os("--base"),
                pair.base_a.as_os_str(),
                os("--metric"),
                os("l2"),
                os("--out"),
                out.as_os_str(),
                os("--threads"),
                os("1"),
                os("--cluster-size"),
                os("64"),
            ],
        ),
    ];
    for (name, args) in &commands {
        let _ = std::fs::remove_dir_all(&out);
        copy_dir(&pair.a, &out);
        let pid = dead_pid();
        crashed_publish(&pair, &out, pid, Kill::After(PublishStep::OldMovedAside));
        assert!(!out.exists());
        let o = m3(args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{name}: {stderr}");
        assert!(
            stderr.contains("finished a publication that was interrupted"),
            "{name}: {stderr}"
        );
        assert_eq!(temporaries(&out).unwrap(), vec![], "{name}: {stderr}");
        if *name != "build" {
            assert_eq!(index_at(&out, &pair), "B", "{name}");
        } else {
            verify(&out).unwrap();
        }
    }
}
