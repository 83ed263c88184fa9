//! The access log: one line per request, formatted here and appended to the log writer.
//!
//! It is the one line every request writes, so it skips tracing's event machinery (dispatch,
//! field visitors, the current span's fields, a formatter per line): as a `tracing` event it
//! cost ~15 % of a cached answer's instructions. It is still governed by the log filter
//! (`RUST_LOG=access=off` turns it off) and has the shape of every other line: JSON with
//! `timestamp`, `level`, `target` = `access` and `message` = `request`, or a text line on a
//! terminal.
use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use super::log_writer::LogWriter;

/// What one request's line says.
#[derive(Debug)]
pub struct Line<'a> {
    pub method: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub elapsed: Duration,
    pub request_id: &'a str,
    pub trace_id: &'a str,
    pub caller: &'a str,
    pub vendors: &'a str,
}

#[derive(Debug)]
struct AccessLog {
    writer: LogWriter,
    json: bool,
}

static ACCESS: OnceLock<AccessLog> = OnceLock::new();

/// Sends access lines to `writer` from now on (the process's logging set-up calls this once).
pub fn install(writer: LogWriter, json: bool) {
    let _ = ACCESS.set(AccessLog { writer, json });
}

/// Whether a line would be written: logging is set up and the filter lets `access` through.
pub fn enabled() -> bool {
    ACCESS.get().is_some() && tracing::enabled!(target: "access", tracing::Level::INFO)
}

/// Writes `line`. Callers ask [`enabled`] first (so that a line the filter drops is not even
/// built); without logging set up this writes nothing.
pub fn write(line: &Line<'_>) {
    let Some(log) = ACCESS.get() else {
        return;
    };
    let mut out = Vec::with_capacity(320);
    format(&mut out, line, jiff::Timestamp::now(), log.json);
    let _ = (&log.writer).write_all(&out);
}

fn format(out: &mut Vec<u8>, l: &Line<'_>, now: jiff::Timestamp, json: bool) {
    // milliseconds with microsecond resolution, as the JSON number the line has always had
    let micros = l.elapsed.as_micros();
    if json {
        // written piece by piece rather than by `write!` and serde_json (~3.4k instructions a
        // line, 7 % of a cached answer): the timestamp digit by digit, strings by `write_str`
        use crate::json_text::write_str as s;
        out.extend_from_slice(b"{\"timestamp\":\"");
        timestamp(out, now);
        out.extend_from_slice(
            b"\",\"level\":\"INFO\",\"target\":\"access\",\"message\":\"request\",\"method\":",
        );
        s(out, l.method);
        out.extend_from_slice(b",\"route\":");
        s(out, l.route);
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(itoa::Buffer::new().format(l.status).as_bytes());
        out.extend_from_slice(b",\"duration_ms\":");
        out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
        let mut frac = *b".000";
        crate::engine::time::put_digits(&mut frac, 1, (micros % 1000) as u32, 3);
        out.extend_from_slice(&frac);
        out.extend_from_slice(b",\"request_id\":");
        s(out, l.request_id);
        out.extend_from_slice(b",\"trace_id\":");
        s(out, l.trace_id);
        out.extend_from_slice(b",\"caller\":");
        s(out, l.caller);
        out.extend_from_slice(b",\"vendors\":");
        s(out, l.vendors);
        out.extend_from_slice(b"}\n");
    } else {
        // values a caller controls are quoted with escapes, so a line stays one line
        let duration = format_args!("{}.{:03}", micros / 1000, micros % 1000);
        let _ = writeln!(
            out,
            "{now:.6}  INFO access: request method={} route={} status={} duration_ms={duration} request_id={:?} trace_id={} caller={:?} vendors={:?}",
            l.method, l.route, l.status, l.request_id, l.trace_id, l.caller, l.vendors
        );
    }
}

/// `t` in UTC with microseconds, as jiff writes `{t:.6}`: `2026-11-26T02:07:16.846337Z`, digit
/// by digit (years before 0000, which a clock does not show, by jiff; its years end at 9999).
fn timestamp(out: &mut Vec<u8>, t: jiff::Timestamp) {
    let dt = jiff::tz::Offset::UTC.to_datetime(t);
    let Ok(year) = u32::try_from(dt.year()) else {
        let _ = write!(out, "{t:.6}");
        return;
    };
    use crate::engine::time::{put_date_time, put_digits};
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    put_date_time(&mut b, year, dt);
    put_digits(&mut b, 20, dt.subsec_nanosecond() as u32 / 1000, 6);
    out.extend_from_slice(&b);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(request_id: &'a str) -> Line<'a> {
        Line {
            method: "POST",
            route: "coupons_query",
            status: 200,
            elapsed: Duration::from_micros(12_345),
            request_id,
            trace_id: "-",
            caller: "billing",
            vendors: "op=ok hkl=timeout",
        }
    }

    #[test]
    fn a_json_line_is_one_object_with_every_field() {
        let mut out = Vec::new();
        let now: jiff::Timestamp = "2026-11-26T02:07:16.846337Z".parse().unwrap();
        format(&mut out, &line("id\"with\nquote"), now, true);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["timestamp"], "2026-11-26T02:07:16.846337Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "access");
        assert_eq!(v["message"], "request");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["route"], "coupons_query");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 12.345);
        assert_eq!(v["request_id"], "id\"with\nquote");
        assert_eq!(v["trace_id"], "-");
        assert_eq!(v["caller"], "billing");
        assert_eq!(v["vendors"], "op=ok hkl=timeout");
    }

    #[test]
    fn a_text_line_stays_one_line_whatever_the_request_id() {
        let mut out = Vec::new();
        let now: jiff::Timestamp = "2026-11-26T02:07:16Z".parse().unwrap();
        format(&mut out, &line("a\nb"), now, false);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("status=200 duration_ms=12.345"), "{text}");
        assert!(text.contains(r#"request_id="a\nb""#), "{text}");
    }

    #[test]
    fn timestamps_read_as_jiff_writes_them() {
        // instants across jiff's range, with every kind of fraction, and the ends of a second
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut instants: Vec<jiff::Timestamp> = [
            "1970-01-01T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "9999-12-30T21:59:59.999999999Z",
            "-000001-12-31T23:59:59.5Z",
            "2026-11-26T02:07:16.000001Z",
        ]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let range = jiff::Timestamp::MAX.as_second() - jiff::Timestamp::MIN.as_second();
            let secs = jiff::Timestamp::MIN.as_second() + (x % range as u64) as i64;
            let nanos = (x >> 33) as i32 % 1_000_000_000;
            instants.push(jiff::Timestamp::new(secs, nanos).unwrap());
        }
        for t in instants {
            let mut out = Vec::new();
            timestamp(&mut out, t);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{t:.6}"));
        }
    }

    #[test]
    fn durations_keep_leading_zeros_of_the_fraction() {
        let mut out = Vec::new();
        let mut l = line("x");
        l.elapsed = Duration::from_micros(1_005);
        format(&mut out, &l, jiff::Timestamp::UNIX_EPOCH, true);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["duration_ms"], 1.005);
    }
}
