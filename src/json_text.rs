//! JSON strings written straight into a buffer: the hot writers (merged pages, the access
//! line) write their own JSON and only need a string's quotes and escapes.

/// Appends `s` as a JSON string. Text that needs no escape (nearly all of it) is copied as it
/// is; the rest goes through serde_json's escaping.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    // a fold, not `all`: without the early exit the check is vectorized (text that needs
    // escaping is rare, so the whole string is read either way)
    let plain = !s.bytes().fold(false, |esc, b| {
        esc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("a string serializes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_read_back_as_written_whatever_they_hold() {
        // each kind of escape once and twice (a check that toggled instead of accumulating
        // would let a string with two through unescaped), and a space, the first byte that
        // needs none
        for s in [
            "",
            "plain",
            "a space",
            "满100减20",
            "quote\"d",
            "two \"quotes\"",
            "back\\slash",
            "two back\\sla\\shes",
            "new\nline",
            "\u{1}\u{1f}",
            "\u{7f}é",
        ] {
            let mut out = Vec::new();
            write_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }
}
