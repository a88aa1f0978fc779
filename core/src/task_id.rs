//! Task ids: short, descriptive kebab-case names (`security-review`, `fix-login-bug`).
//!
//! An id names a directory (`.dispatch/tasks/<id>/`) on every node, so the rules also keep
//! every path inside `.dispatch/tasks/`.

use crate::limits::InvalidInput;

/// Longest task id, in bytes.
pub const MAX_TASK_ID_LEN: usize = 63;

/// Checks an explicit task id: lower-case letters and digits in words joined by single
/// hyphens, at most 63 characters.
pub fn validate(id: &str) -> Result<(), InvalidInput> {
    let what = || format!("task id `{}`", id.escape_debug());
    if id.is_empty() {
        return Err(InvalidInput::new("task id", "must not be empty"));
    }
    if id.len() > MAX_TASK_ID_LEN {
        return Err(InvalidInput::new(
            what(),
            format!("is {} characters; the limit is {MAX_TASK_ID_LEN}", id.len()),
        ));
    }
    let ok_chars = id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok_chars || id.starts_with('-') || id.ends_with('-') || id.contains("--") {
        return Err(InvalidInput::new(
            what(),
            "must be kebab-case: lower-case letters and digits in words joined by single hyphens (e.g. `security-review`)",
        ));
    }
    Ok(())
}

const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "of", "to", "for", "and", "or", "in", "on", "at", "by", "with", "this",
    "that", "these", "those", "please", "my", "our", "your", "it", "its", "is", "are", "be", "can",
    "could", "would", "should", "you", "me", "we", "i", "do", "then", "all", "some", "from",
    "into", "using", "use", "have",
];

/// Derives an id from a prompt: the first meaningful words of its first non-empty line,
/// lower-cased and joined by hyphens (at most 4 words, 40 characters). Falls back to `task`.
pub fn derive(prompt: &str) -> String {
    let line = prompt.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut words: Vec<String> = Vec::new();
    for raw in line.split(|c: char| !c.is_ascii_alphanumeric()) {
        let w = raw.to_ascii_lowercase();
        if w.is_empty() || STOP_WORDS.contains(&w.as_str()) {
            continue;
        }
        words.push(w);
        if words.len() == 4 {
            break;
        }
    }
    let mut id = String::new();
    for w in words {
        let extra = if id.is_empty() { w.len() } else { w.len() + 1 };
        if id.len() + extra > 40 {
            if id.is_empty() {
                id.push_str(&w[..40]);
            }
            break;
        }
        if !id.is_empty() {
            id.push('-');
        }
        id.push_str(&w);
    }
    if id.is_empty() {
        "task".to_string()
    } else {
        id
    }
}

/// Makes `base` unique against `taken`: `base`, then `base-2`, `base-3`, … (shortening `base`
/// so the result stays within the length limit).
pub fn make_unique(base: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(base) {
        return base.to_string();
    }
    (2u32..)
        .map(|n| with_suffix(base, n))
        .find(|c| !taken(c))
        .expect("u32 suffixes exhausted")
}

/// `base-n`, shortening `base` so the result stays within the length limit.
pub fn with_suffix(base: &str, n: u32) -> String {
    let suffix = format!("-{n}");
    let keep = base.len().min(MAX_TASK_ID_LEN - suffix.len());
    format!("{}{suffix}", base[..keep].trim_end_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        for ok in ["security-review", "a", "fix-login-bug-2", &"a".repeat(63)] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Security",
            "a--b",
            "-a",
            "a-",
            "../etc",
            "a/b",
            "a b",
            "é",
            &"a".repeat(64),
        ] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn derivation() {
        assert_eq!(
            derive("Do a security review of this project"),
            "security-review-project"
        );
        assert_eq!(derive("fix the login bug!"), "fix-login-bug");
        assert_eq!(derive("$(touch /tmp/x); rm -rf `pwd`"), "touch-tmp-x-rm");
        assert_eq!(derive(""), "task");
        assert_eq!(derive("\n\n  update README\nmore"), "update-readme");
        let long = derive(&"x".repeat(100));
        assert_eq!(long.len(), 40);
        for p in ["Do a security review", "$(touch x)", "über straße", "!!!"] {
            assert!(validate(&derive(p)).is_ok(), "{p}");
        }
    }

    #[test]
    fn uniqueness() {
        let taken = ["review", "review-2"];
        assert_eq!(make_unique("review", |c| taken.contains(&c)), "review-3");
        assert_eq!(make_unique("fresh", |c| taken.contains(&c)), "fresh");
        let base = "a".repeat(63);
        let u = make_unique(&base, |c| c == base);
        assert_eq!(u.len(), 63);
        assert!(validate(&u).is_ok());
    }
}
