//! The text output of `coupon-gateway explain`: the stages in the order they happened, one
//! block per page, written for a person comparing them with a vendor's documentation.
use std::fmt::Write;

use serde_json::Value;

use super::record::*;

/// The whole explanation as text.
pub fn text(e: &Explanation) -> String {
    let mut out = String::new();
    let _ = write(&mut out, e);
    out
}

fn write(out: &mut String, e: &Explanation) -> std::fmt::Result {
    writeln!(out, "explain {} {} ({})", e.vendor, e.operation, e.mode)?;
    if !e.inputs.is_empty() {
        let inputs: Vec<String> = e
            .inputs
            .iter()
            .map(|(k, v)| format!("{k}={}", plain(v)))
            .collect();
        writeln!(out, "inputs: {}", inputs.join(" "))?;
    }
    for (i, page) in e.pages.iter().enumerate() {
        writeln!(out)?;
        match (page.number, &page.cursor) {
            (Some(n), Some(c)) => writeln!(out, "== page {n} (cursor {c})")?,
            (Some(n), None) => writeln!(out, "== page {n}")?,
            (None, _) => writeln!(out, "== page (call #{})", i + 1)?,
        }
        for t in &page.token_fetches {
            writeln!(out, "-- token endpoint")?;
            for (n, a) in t.attempts.iter().enumerate() {
                write_attempt(out, &format!("token attempt {}", n + 1), a, "wire")?;
            }
            if let Some(a) = &t.answer {
                write_answer(out, "token answer", a)?;
            }
        }
        // over a recorded answer the request is built and signed, but not sent
        let wire = if e.mode == "answer" {
            "not sent"
        } else {
            "wire"
        };
        for (n, a) in page.attempts.iter().enumerate() {
            write_attempt(out, &format!("attempt {}", n + 1), a, wire)?;
        }
        if let Some(a) = &page.answer {
            write_answer(out, "answer", a)?;
        }
        if let Some(env) = &page.envelope {
            write_envelope(out, env)?;
        }
        for item in &page.items {
            write_item(out, item)?;
        }
        if let Some(next) = &page.next {
            let count = page.item_count.unwrap_or(0);
            let then = match next.kind {
                "page" => match (&next.cursor, next.number) {
                    (Some(c), _) => format!("next: cursor {c}"),
                    (None, Some(n)) => format!("next: page {n}"),
                    _ => "next page".to_owned(),
                },
                "truncated" => "the vendor has more, stopped at max_pages".to_owned(),
                _ => "last page".to_owned(),
            };
            writeln!(out, "-- page done: {count} item(s); {then}")?;
        }
    }
    writeln!(out)?;
    let o = &e.outcome;
    match (o.ok, o.stage) {
        (true, _) => {
            write!(
                out,
                "OK: {} row(s), {} dropped, {} page(s)",
                o.rows, o.dropped, o.pages
            )?;
            if o.truncated {
                write!(out, ", truncated at max_pages")?;
            }
            if let Some(note) = &o.error {
                write!(out, " ({note})")?;
            }
            writeln!(out)
        }
        (false, stage) => writeln!(
            out,
            "FAILED at {}: {}",
            stage.unwrap_or("call"),
            o.error.as_deref().unwrap_or("")
        ),
    }
}

fn write_answer(out: &mut String, what: &str, a: &AnswerRecord) -> std::fmt::Result {
    writeln!(out, "-- {what}: HTTP {}", a.status)?;
    for [k, v] in &a.headers {
        writeln!(out, "   {k}: {v}")?;
    }
    writeln!(out, "   {}", a.body.trim_end())
}

fn write_attempt(out: &mut String, what: &str, a: &AttemptRecord, wire: &str) -> std::fmt::Result {
    writeln!(out, "-- {what}")?;
    let (after, before): (Vec<&StepRecord>, Vec<&StepRecord>) =
        a.steps.iter().partition(|s| s.signs_request);
    for s in before {
        write_step(out, s)?;
    }
    if let Some(r) = &a.rendered {
        writeln!(out, "   rendered: {} {}", r.method, r.target)?;
        if !r.body.is_empty() {
            writeln!(out, "     body: {}", r.body)?;
        }
    }
    for s in after {
        write_step(out, s)?;
    }
    match &a.wire {
        Some(w) => {
            writeln!(out, "   {wire}: {} {}", w.method, w.url)?;
            for [k, v] in &w.headers {
                writeln!(out, "     {k}: {v}")?;
            }
            if !w.body.is_empty() {
                writeln!(out, "     body: {}", w.body)?;
            }
        }
        None => writeln!(out, "   (the request could not be built)")?,
    }
    Ok(())
}

fn write_step(out: &mut String, s: &StepRecord) -> std::fmt::Result {
    writeln!(out, "   step {} -> {}", s.name, s.into)?;
    writeln!(out, "     input:  {}", s.input)?;
    match (&s.output, &s.error) {
        (Some(o), _) => writeln!(out, "     output: {o}"),
        (None, Some(e)) => writeln!(out, "     FAILED: {e}"),
        (None, None) => Ok(()),
    }
}

fn write_envelope(out: &mut String, env: &EnvelopeRecord) -> std::fmt::Result {
    match (env.items, &env.error) {
        (Some(n), _) => writeln!(out, "-- envelope: {} ({n} item(s))", env.verdict)?,
        (None, Some(e)) => writeln!(out, "-- envelope: {} ({e})", env.verdict)?,
        (None, None) => writeln!(out, "-- envelope: {}", env.verdict)?,
    }
    for c in &env.conditions {
        let found = c
            .found
            .as_ref()
            .map_or("nothing".to_owned(), Value::to_string);
        writeln!(
            out,
            "   {} {} {}: found {found} -> {}",
            c.rule,
            c.path,
            c.expects,
            if c.holds { "holds" } else { "does not hold" }
        )?;
    }
    Ok(())
}

fn write_item(out: &mut String, item: &ItemRecord) -> std::fmt::Result {
    match &item.dropped {
        None => writeln!(out, "-- item {}: kept", item.index)?,
        Some(d) => writeln!(
            out,
            "-- item {}: DROPPED, `{}`: {}",
            item.index, d.field, d.reason
        )?,
    }
    let width = item.fields.iter().map(|f| f.field.len()).max().unwrap_or(0);
    for f in &item.fields {
        let Some(path) = &f.path else { continue };
        let matched = f
            .matched
            .as_ref()
            .map_or("nothing".to_owned(), Value::to_string);
        let result = match (&f.value, &f.error) {
            (_, Some(e)) => format!("CANNOT READ: {e}"),
            (Some(v), None) => v.to_string(),
            (None, None) if f.required => "no value (required)".to_owned(),
            (None, None) => "null".to_owned(),
        };
        writeln!(out, "   {:width$}  {path}  {matched} -> {result}", f.field)?;
    }
    Ok(())
}

/// A value as typed on a command line: text without quotes.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
