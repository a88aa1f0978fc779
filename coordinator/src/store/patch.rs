//! Plan history as changes: each stored plan event holds the one edit that turns the previous
//! plan into the new one (bytes kept at the start, bytes kept at the end, the text between),
//! so a tick of one item costs a few bytes however long the plan is.

use serde::{Deserialize, Serialize};

/// One contiguous edit: keep `start` bytes, drop everything up to the last `end` bytes, and put
/// `insert` between.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patch {
    /// Bytes of the old text kept at the start.
    pub start: usize,
    /// Bytes of the old text kept at the end.
    pub end: usize,
    /// The new text between them.
    pub insert: String,
}

/// The smallest single edit from `old` to `new` (cut at character boundaries).
pub fn diff(old: &str, new: &str) -> Patch {
    let (a, b) = (old.as_bytes(), new.as_bytes());
    let mut start = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    while !(old.is_char_boundary(start) && new.is_char_boundary(start)) {
        start -= 1;
    }
    let max_end = a.len().min(b.len()) - start;
    let mut end = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take(max_end)
        .take_while(|(x, y)| x == y)
        .count();
    while !(old.is_char_boundary(a.len() - end) && new.is_char_boundary(b.len() - end)) {
        end -= 1;
    }
    Patch {
        start,
        end,
        insert: new[start..b.len() - end].to_string(),
    }
}

/// `old` with `p` applied; `None` when the patch does not fit it.
pub fn apply(old: &str, p: &Patch) -> Option<String> {
    if p.start.checked_add(p.end)? > old.len()
        || !old.is_char_boundary(p.start)
        || !old.is_char_boundary(old.len() - p.end)
    {
        return None;
    }
    let mut out = String::with_capacity(p.start + p.insert.len() + p.end);
    out.push_str(&old[..p.start]);
    out.push_str(&p.insert);
    out.push_str(&old[old.len() - p.end..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_tick_costs_one_byte() {
        let old = "# Plan\n- [ ] a\n- [ ] b\n".repeat(100);
        let new = old.replacen("- [ ] a", "- [x] a", 1);
        let p = diff(&old, &new);
        assert_eq!(p.insert, "x");
        assert_eq!(apply(&old, &p).unwrap(), new);
    }

    #[test]
    fn multibyte_text_is_cut_between_characters() {
        let p = diff("- [ ] café ✓", "- [ ] cafè ✓");
        assert_eq!(apply("- [ ] café ✓", &p).unwrap(), "- [ ] cafè ✓");
        assert!(p.insert.len() <= "è".len());
    }

    proptest! {
        #[test]
        fn apply_of_diff_gives_the_new_text(old in "\\PC{0,60}", new in "\\PC{0,60}") {
            let p = diff(&old, &new);
            prop_assert_eq!(apply(&old, &p).unwrap(), new);
        }

        #[test]
        fn a_local_edit_stays_local(prefix in "[a-z\\n -]{0,200}", mid in "\\PC{0,5}", suffix in "[a-z\\n -]{0,200}") {
            let old = format!("{prefix}{suffix}");
            let new = format!("{prefix}{mid}{suffix}");
            prop_assert!(diff(&old, &new).insert.len() <= mid.len());
        }
    }
}
