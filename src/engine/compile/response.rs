//! The response pass: the envelope rules, paging, and the field mapping of items to the
//! route's canonical schema.
use super::Cx;
use crate::canonical::schema::{self, FieldDef};
use crate::config::{OperationConfig, PagingConfig, PagingStyle};
use crate::engine::extract::{FieldSpec, ItemMapper};
use crate::engine::plan::{PagingPlan, ResponsePlan};

/// The envelope rules; `creds` resolves the keys of `decrypt` entries.
pub fn envelope(
    cx: &mut Cx<'_>,
    op: &OperationConfig,
    creds: &dyn crate::engine::template::Scope,
) -> Option<ResponsePlan> {
    let r = &op.response;
    let mut decrypt = Vec::new();
    for (i, d) in r.decrypt.iter().enumerate() {
        match crate::engine::decrypt::Decrypt::compile(d, creds) {
            Ok(d) => decrypt.push(d),
            Err((k, e)) => {
                let at = if k.is_empty() {
                    format!("response.decrypt.{i}")
                } else {
                    format!("response.decrypt.{i}.{k}")
                };
                cx.err(&at, e);
            }
        }
    }
    let success = cx.conditions(&r.success, "response.success");
    let empty = cx.conditions(&r.empty, "response.empty");
    let not_found = cx.conditions(&r.not_found, "response.not_found");
    let rate_limited = cx.conditions(&r.rate_limited, "response.rate_limited");
    let mut opt = |p: &Option<String>, at: &str| p.as_deref().and_then(|p| cx.path(p, at));
    let error_code = opt(&r.error_code, "response.error_code");
    let error_message = opt(&r.error_message, "response.error_message");
    let error_fields = opt(&r.error_fields, "response.error_fields");
    let page_info = match &r.page_info {
        None => None,
        Some(pi) => {
            let parts = [
                cx.path(&pi.page, "response.page_info.page"),
                cx.path(&pi.per_page, "response.page_info.per_page"),
                cx.path(&pi.total, "response.page_info.total"),
                cx.path(&pi.total_pages, "response.page_info.total_pages"),
            ];
            match parts {
                [Some(a), Some(b), Some(c), Some(d)] => Some([a, b, c, d]),
                _ => None,
            }
        }
    };
    let items = cx.path(&r.items, "response.items")?;
    Some(ResponsePlan {
        decrypt,
        error_fields,
        page_info,
        success,
        empty,
        not_found,
        rate_limited,
        error_code,
        error_message,
        items,
    })
}

pub fn paging(cx: &mut Cx<'_>, p: &PagingConfig) -> Option<PagingPlan> {
    let mut opt = |v: &Option<String>, at: &str| v.as_deref().and_then(|s| cx.path(s, at));
    let plan = PagingPlan {
        style: p.style,
        first_page: p.first_page,
        page_size: p.page_size,
        max_pages: p.max_pages,
        has_more: opt(&p.has_more, "paging.has_more"),
        total_items: opt(&p.total_items, "paging.total_items"),
        total_pages: opt(&p.total_pages, "paging.total_pages"),
        next_cursor: opt(&p.next_cursor, "paging.next_cursor"),
    };
    if p.max_pages == 0 || p.page_size == 0 {
        cx.err("paging", "`max_pages` and `page_size` are at least 1");
    }
    if p.style == PagingStyle::Cursor && plan.next_cursor.is_none() {
        cx.err(
            "paging",
            "cursor paging needs `next_cursor`: where the answer gives the next cursor",
        );
    }
    Some(plan)
}

/// The item mapping onto `schema`; `origin` resolves relative URLs.
pub fn mapper(
    cx: &mut Cx<'_>,
    op: &OperationConfig,
    schema: &'static [FieldDef],
    origin: &str,
) -> Option<ItemMapper> {
    let mut fields: Vec<Option<FieldSpec>> = vec![None; schema.len()];
    let mut ok = true;
    for (name, spec) in &op.fields {
        let at = format!("fields.{name}");
        let Some(slot) = schema::slot(schema, name) else {
            let known: Vec<&str> = schema.iter().map(|d| d.name).collect();
            cx.err(
                &at,
                format!(
                    "`{name}` is not a canonical field (known: {})",
                    known.join(", ")
                ),
            );
            ok = false;
            continue;
        };
        match FieldSpec::compile(spec, &schema[slot]) {
            Ok(s) => fields[slot] = Some(s),
            Err((p, e)) => {
                let sub = if p.is_empty() {
                    at
                } else {
                    format!("{at}.{p}")
                };
                cx.err(&sub, e);
                ok = false;
            }
        }
    }
    for (def, f) in schema.iter().zip(&fields) {
        if def.required && f.is_none() && !op.fields.is_empty() && !op.fields.contains_key(def.name)
        {
            cx.err(
                "fields",
                format!("the canonical field `{}` is required", def.name),
            );
            ok = false;
        }
    }
    if op.fields.is_empty() && !schema.is_empty() {
        cx.err("fields", "map at least the required canonical fields");
        ok = false;
    }
    ok.then(|| ItemMapper {
        schema,
        fields,
        origin: origin.to_owned(),
        moves: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use crate::engine::plan::one_operation;

    /// The errors of compiling one `list_coupons` operation with `extra` settings and `fields`.
    fn errors(extra: &str, fields: &str) -> Vec<String> {
        let op = format!(
            r#"
        identity: [member_id]
        request: {{method: GET, path: /c}}
        response:
          success: [{{path: $.code, in: [0]}}]
          items: $.data
        fields: {fields}
{extra}"#
        );
        one_operation(&op).err().unwrap_or_default()
    }

    const FIELDS: &str = "{id: $.id, status: {value: usable}}";

    fn has(errors: &[String], want: &str) -> bool {
        errors.iter().any(|e| e.contains(want))
    }

    #[test]
    fn paging_needs_at_least_one_page_of_at_least_one_item() {
        assert_eq!(errors("", FIELDS), Vec::<String>::new());
        let paging = |p: &str| format!("        paging: {{style: page_number, {p}}}\n");
        assert_eq!(
            errors(&paging("max_pages: 2, page_size: 3"), FIELDS),
            Vec::<String>::new()
        );
        for p in ["max_pages: 0, page_size: 3", "max_pages: 2, page_size: 0"] {
            let e = errors(&paging(p), FIELDS);
            assert!(
                has(&e, "`max_pages` and `page_size` are at least 1"),
                "{p}: {e:#?}"
            );
        }
    }

    #[test]
    fn every_required_canonical_field_is_mapped() {
        let e = errors("", "{id: $.id, name: $.title}");
        assert!(
            has(&e, "the canonical field `status` is required"),
            "{e:#?}"
        );
        assert!(!has(&e, "the canonical field `id`"), "{e:#?}");
        // a required field that is mapped wrongly is reported for its mistake, not as missing
        let e = errors("", "{id: $.id, status: {value: valid}}");
        assert!(!e.is_empty() && !has(&e, "is required"), "{e:#?}");
        let e = errors("", "{}");
        assert!(
            has(&e, "map at least the required canonical fields"),
            "{e:#?}"
        );
        assert!(
            !has(&e, "is required"),
            "one error for an empty mapping: {e:#?}"
        );
    }
}
