//! Date patterns as vendor documents write them (Java's `SimpleDateFormat` letters):
//! `yyyy-MM-dd HH:mm:ss`, `yyyyMMddHHmmss`, `yyyy/MM/dd`, `HH:mm:ss.SSS`. Translated once into
//! a strftime pattern; other letters are refused, and text in single quotes is literal.
use std::sync::Arc;

use super::strftime::pattern;
use super::{Layout, LayoutKind};

pub struct JavaPattern;

/// The letters understood, longest first.
const LETTERS: &[(&str, &str)] = &[
    ("yyyy", "%Y"),
    ("MM", "%m"),
    ("dd", "%d"),
    ("HH", "%H"),
    ("mm", "%M"),
    ("ss", "%S"),
    ("SSS", "%3f"),
];

impl LayoutKind for JavaPattern {
    fn name(&self) -> &'static str {
        "pattern"
    }
    fn written(&self) -> &'static str {
        "a pattern of `yyyy MM dd HH mm ss SSS`, e.g. `yyyy-MM-dd HH:mm:ss`, `yyyyMMddHHmmss` (`date`, `datetime` are `yyyy-MM-dd`, `yyyy-MM-dd HH:mm:ss`)"
    }
    fn summary(&self) -> &'static str {
        "the vendor documents' date letters, in the zone; without `HH` it is a date (`bound` applies)"
    }
    fn compile(&self, spec: &str) -> Option<Result<Arc<dyn Layout>, String>> {
        if !spec.contains("yyyy") && !spec.contains("HH") {
            return None;
        }
        Some(translate(spec).and_then(pattern))
    }
    fn examples(&self) -> &'static [(&'static str, &'static str, i64, &'static str)] {
        &[
            (
                "yyyy-MM-dd HH:mm:ss",
                "+08:00",
                1_448_531_062_000,
                "2015-11-26 17:44:22",
            ),
            ("yyyyMMddHHmmss", "UTC", 1_448_531_062_000, "20151126094422"),
            ("yyyy-MM-dd", "+08:00", 1_448_467_200_000, "2015-11-26"),
        ]
    }
}

fn translate(spec: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = spec;
    while let Some(c) = rest.chars().next() {
        if let Some((from, to)) = LETTERS.iter().find(|(f, _)| rest.starts_with(f)) {
            out.push_str(to);
            rest = &rest[from.len()..];
        } else if c == '\'' {
            let end = rest[1..]
                .find('\'')
                .ok_or_else(|| format!("unclosed quote in time pattern `{spec}`"))?;
            out.push_str(&rest[1..1 + end].replace('%', "%%"));
            rest = &rest[end + 2..];
        } else if c.is_ascii_alphabetic() {
            return Err(format!(
                "time pattern `{spec}`: `{c}` is not a pattern letter here (known: yyyy, MM, dd, HH, mm, ss, SSS; quote literal text as 'T')"
            ));
        } else {
            if c == '%' {
                out.push('%');
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_text_is_literal_and_percent_signs_stay_text() {
        assert_eq!(
            translate("yyyy-MM-dd'T'HH:mm:ss").unwrap(),
            "%Y-%m-%dT%H:%M:%S"
        );
        assert_eq!(translate("'at' HH'h'mm").unwrap(), "at %Hh%M");
        assert_eq!(translate("yyyy'%d'%").unwrap(), "%Y%%d%%");
        assert_eq!(translate("HH:mm:ss.SSS").unwrap(), "%H:%M:%S.%3f");
        assert!(translate("yyyy'T").unwrap_err().contains("unclosed quote"));
        assert!(
            translate("yyyy-MM-ddTHH")
                .unwrap_err()
                .contains("`T` is not a pattern letter")
        );
    }
}
