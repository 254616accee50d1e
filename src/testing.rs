//! What this crate's tests may skip, and the switch that forbids it: a test that cannot run
//! here (no io_uring, no real data) calls [`skip`], which prints why and lets the test pass —
//! unless the requirement's environment variable is `1`, when it panics instead. `.ci/run`
//! sets both (`M3_REQUIRE_URING=1 M3_REQUIRE_DATA=1`), so a green CI means every such test ran.
//!
//! Not part of the engine's API: it is public only because integration tests link the library
//! as any user would.

use std::path::PathBuf;

/// Something a test needs that a machine may lack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// io_uring (the kernel or a sandbox may refuse it).
    Uring,
    /// The real data sets ([`crate::data::shared_data_dir`]).
    Data,
}

impl Requirement {
    /// The environment variable that, set to `1`, turns a skip into a failure.
    pub fn env_var(self) -> &'static str {
        match self {
            Requirement::Uring => "M3_REQUIRE_URING",
            Requirement::Data => "M3_REQUIRE_DATA",
        }
    }

    /// Whether the environment demands it.
    pub fn required(self) -> bool {
        std::env::var(self.env_var()).is_ok_and(|v| v.trim() == "1")
    }
}

/// A test cannot run because `req` is missing (`why`): panics if `req` is required (see the
/// module doc), else prints `SKIPPED: why` on stderr. The caller then returns.
pub fn skip(req: Requirement, why: impl std::fmt::Display) {
    if req.required() {
        panic!("{}=1 but this test would be skipped: {why}", req.env_var());
    }
    eprintln!("SKIPPED ({} is not 1): {why}", req.env_var());
}

/// The directory of the real data sets ([`crate::data::shared_data_dir`]); when there is
/// none, [`skip`]s and returns `None`.
pub fn shared_data_root() -> Option<PathBuf> {
    let root = crate::data::shared_data_dir();
    if root.is_none() {
        skip(
            Requirement::Data,
            "no shared data directory (set M3_SHARED_DATA, or put the sets in ../shared/data)",
        );
    }
    root
}

/// The real data set `name` (a directory under [`crate::data::shared_data_dir`]) when every
/// file of `files` is in it; otherwise [`skip`]s and returns `None`.
pub fn shared_data(name: &str, files: &[&str]) -> Option<PathBuf> {
    let dir = shared_data_root()?.join(name);
    if !dir.is_dir() {
        skip(Requirement::Data, format!("{} is missing", dir.display()));
        return None;
    }
    if let Some(f) = files.iter().find(|f| !dir.join(f).is_file()) {
        skip(
            Requirement::Data,
            format!("{} is incomplete: no {f}", dir.display()),
        );
        return None;
    }
    Some(dir)
}

#[cfg(test)]
mod tests {
    const CHILD: &str = "M3_TESTING_SKIP_CHILD";

    /// Runs in a child process (see the next test); a no-op when `CHILD` is not set.
    #[test]
    fn testing_skip_child() {
        if std::env::var_os(CHILD).is_some() {
            super::skip(super::Requirement::Data, "a test of skip itself");
        }
    }

    #[test]
    fn testing_skip_fails_only_when_required() {
        // The variables are set only in a child process: setting them here would race other
        // tests.
        let run = |require: Option<&str>| {
            let mut c = std::process::Command::new(std::env::current_exe().unwrap());
            c.args([
                "--exact",
                "testing::tests::testing_skip_child",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env_remove("M3_REQUIRE_DATA");
            if let Some(v) = require {
                c.env("M3_REQUIRE_DATA", v);
            }
            c.output().unwrap()
        };
        for ok in [None, Some("0"), Some("")] {
            let o = run(ok);
            assert!(o.status.success(), "{ok:?}: {o:?}");
            assert!(
                String::from_utf8_lossy(&o.stderr).contains("SKIPPED"),
                "{o:?}"
            );
        }
        let o = run(Some("1"));
        assert!(!o.status.success(), "{o:?}");
        let out = String::from_utf8_lossy(&o.stdout) + String::from_utf8_lossy(&o.stderr);
        assert!(
            out.contains("M3_REQUIRE_DATA=1 but this test would be skipped"),
            "{out}"
        );
    }
}
