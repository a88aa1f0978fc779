//! A worker's task directory as the node reads it (`dispatch_agent::fuzzing::ipc`). The input
//! is split into a plan and entries: each entry is a kind byte (file, link, directory), a
//! name up to the next `\n`, and (for a file) a length byte and that many content bytes.
#![no_main]
use dispatch_agent::fuzzing::{Entry, ipc};

fn entries(mut data: &[u8]) -> (Vec<u8>, Vec<(String, Entry)>) {
    let cut = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let plan = data[..cut].to_vec();
    data = data.get(cut + 1..).unwrap_or(&[]);
    let mut out = Vec::new();
    while let Some((&kind, rest)) = data.split_first() {
        let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        let name = String::from_utf8_lossy(&rest[..end]).into_owned();
        data = rest.get(end + 1..).unwrap_or(&[]);
        let e = match kind % 3 {
            0 => {
                let n = data.first().map_or(0, |b| usize::from(*b) * 64);
                let body = data.get(1..).unwrap_or(&[]);
                let n = n.min(body.len());
                let e = Entry::File(body[..n].to_vec());
                data = &body[n..];
                e
            }
            1 => Entry::Link(
                if kind & 4 == 0 {
                    "/etc/passwd"
                } else {
                    "../plan.md"
                }
                .into(),
            ),
            _ => Entry::Dir,
        };
        out.push((name, e));
        if out.len() > 64 {
            break;
        }
    }
    (plan, out)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (plan, entries) = entries(data);
    let dir = tempfile::tempdir().unwrap();
    ipc(dir.path(), &plan, &entries);
});
