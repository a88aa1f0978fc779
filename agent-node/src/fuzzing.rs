//! Entry points for fuzzing (`fuzz/`) and for the property tests that run the same code in CI:
//! whatever a worker leaves in its task directory, the node's reading of it never panics,
//! never follows a link, reports each question once and within the limits.

use crate::watched::Watched;
use dispatch_core::limits::MAX_MESSAGE_BYTES;
use dispatch_proto::v1::task_event::Kind;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// What a worker may put in `ipc/`.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A regular file with these bytes.
    File(Vec<u8>),
    /// A symbolic link to this target.
    Link(String),
    /// A directory.
    Dir,
}

/// Writes `plan` and `entries` into task `t`'s directory under `workdir` (a fresh directory),
/// then scans it twice as the node does.
pub fn ipc(workdir: &Path, plan: &[u8], entries: &[(String, Entry)]) {
    let dir = workdir.join(".dispatch/tasks/t");
    let ipc = dir.join("ipc");
    std::fs::create_dir_all(&ipc).unwrap();
    std::fs::write(dir.join("plan.md"), plan).unwrap();
    for (name, e) in entries {
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains(['/', '\0'])
            || name.len() > 200
        {
            continue;
        }
        let p = ipc.join(name);
        // Each name once, and a file only where nothing is: writing a later entry of the same
        // name through an earlier link would write the link's target — `/etc/passwd` when the
        // test runs as root (it did, before this check).
        let _ = match e {
            Entry::File(b) => std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
                .and_then(|mut f| std::io::Write::write_all(&mut f, b)),
            Entry::Link(t) => std::os::unix::fs::symlink(t, &p),
            Entry::Dir => std::fs::create_dir(&p),
        };
    }
    let mut w = Watched::new(
        "t",
        workdir.to_path_buf(),
        workdir.join("no-log"),
        0,
        Vec::new(),
        Arc::new(AtomicU64::new(1 << 20)),
    );
    let (first, _) = w.scan();
    let mut asked = BTreeSet::new();
    for k in &first {
        if let Kind::Question(q) = k {
            assert!(asked.insert(q.seq), "question {} reported twice", q.seq);
            assert!(
                q.text.len() <= MAX_MESSAGE_BYTES + 4,
                "an oversize question passed"
            );
            assert!(
                !q.text.contains("root:x:0:0"),
                "a link was followed into /etc/passwd"
            );
        }
    }
    let (second, _) = w.scan();
    assert!(
        !second.iter().any(|k| matches!(k, Kind::Question(_))),
        "a question was reported again"
    );
}
