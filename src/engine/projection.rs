//! Reading only what an operation reads: a JSON answer parsed into a `Value` that holds the
//! members the operation's paths can reach, and nothing else.
//!
//! Parsing a whole answer into `serde_json::Value` was the largest part of a vendor call's CPU
//! (~40 % of the gateway's instructions on a miss) and most of the memory it holds in flight
//! (a `String` per key and value, a map per object), while a typical operation reads 15 of an
//! item's 25 members. The projection is made once,
//! when the plan is compiled, from every path the operation applies to an answer: the envelope
//! rules, paging, decryption and the field mappings (relative to each item). Members no path
//! names are skipped by the parser without being allocated; a member where a path ends is kept
//! whole, so conversions, `map`, conditions and nested `fields` see exactly what they would
//! see in the whole answer.
//!
//! Only plain paths (names and indexes) can be projected: an operation with any other path
//! (filters, wildcards, descendants) has no projection and reads whole answers, as does
//! anything that shows an answer (`explain`, observers).
//!
//! Two differences from a full parse, on purpose: skipped members are checked for JSON syntax
//! but their text is not decoded (invalid UTF-8 inside a member nobody reads is no error), and
//! they are walked without recursion, so serde_json's nesting limit (128), which protects the
//! stack, applies only to what is kept.
use std::collections::HashMap;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::extract::{JsonPath, Seg};
use super::plan::{PagingPlan, ResponsePlan};

/// The members of an answer that an operation reads.
#[derive(Debug, Clone)]
pub struct Projection {
    root: Node,
}

/// What is kept of one value: all of it, or some members of an object and, of a list, each
/// element's own projection.
#[derive(Debug, Clone, Default)]
struct Node {
    whole: bool,
    /// Looked up once per member of the answer: hashed (a binary search of names was a
    /// quarter of the parse, in `memcmp`).
    keys: HashMap<Box<str>, Node, foldhash::fast::FixedState>,
    /// A list's elements (any index a path names: all of them, projected alike).
    elements: Option<Box<Node>>,
}

impl Node {
    /// A path ends at `segs`: everything below is read by someone. (Nodes made below one
    /// that is already whole are never looked at: `Seed` reads a whole node whole.)
    fn insert(&mut self, segs: &[Seg]) {
        *self.at(segs) = Node {
            whole: true,
            ..Node::default()
        };
    }

    /// The node at `segs`, made as needed.
    fn at(&mut self, segs: &[Seg]) -> &mut Node {
        match segs.split_first() {
            None => self,
            Some((Seg::Key(k), rest)) => self.member(k).at(rest),
            Some((Seg::Index(_), rest)) => self.elements.get_or_insert_default().at(rest),
        }
    }

    fn member(&mut self, name: &str) -> &mut Node {
        self.keys.entry(name.into()).or_default()
    }

    fn child(&self, name: &str) -> Option<&Node> {
        self.keys.get(name)
    }
}

impl Projection {
    /// The projection of one operation's answers: `items` with the paths each item is read
    /// by (`item_paths`), and every other path read from the answer. None when a path is not
    /// plain, or when the whole answer is read anyway.
    pub fn of<'a>(
        response: &'a ResponsePlan,
        paging: Option<&'a PagingPlan>,
        item_paths: impl IntoIterator<Item = &'a JsonPath>,
    ) -> Option<Projection> {
        let r = response;
        let conditions = [&r.success, &r.empty, &r.not_found, &r.rate_limited]
            .into_iter()
            .flatten()
            .map(|c| &c.path);
        let optional = [&r.error_code, &r.error_message, &r.error_fields]
            .into_iter()
            .chain(
                paging
                    .into_iter()
                    .flat_map(|p| [&p.has_more, &p.total_items, &p.total_pages, &p.next_cursor]),
            )
            .flatten();
        let envelope = conditions
            .chain(optional)
            .chain(r.page_info.iter().flatten())
            .chain(r.decrypt.iter().map(|d| d.at()));
        let mut root = Node::default();
        for p in envelope {
            root.insert(p.segments()?);
        }
        // the items path selects a list of items or one item (an object): project both ways
        let items = root.at(r.items.segments()?);
        for p in item_paths {
            let segs = p.segments()?;
            items.insert(segs);
            items.elements.get_or_insert_default().insert(segs);
        }
        (!root.whole).then_some(Projection { root })
    }

    /// Parses `body`, keeping only the projected members.
    pub fn read(&self, body: &[u8]) -> Result<Value, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let v = Seed(&self.root).deserialize(&mut de)?;
        de.end()?;
        Ok(v)
    }
}

/// Deserializes one value as its node says.
struct Seed<'p>(&'p Node);

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.0.whole {
            serde::Deserialize::deserialize(d)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    crate::json_scalars::value_scalars!();

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        match &self.0.elements {
            Some(each) => {
                while let Some(v) = seq.next_element_seed(Seed(each))? {
                    out.push(v);
                }
            }
            // no path goes into this list: its type stays, its elements are not read
            None => while seq.next_element::<IgnoredAny>()?.is_some() {},
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(found) = map.next_key_seed(Member(self.0))? {
            match found {
                Some((name, node)) => {
                    let v = map.next_value_seed(Seed(node))?;
                    out.insert(name, v);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// A member's name: allocated only when the member is kept.
struct Member<'p>(&'p Node);

impl<'de, 'p> DeserializeSeed<'de> for Member<'p> {
    type Value = Option<(String, &'p Node)>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 'p> Visitor<'de> for Member<'p> {
    type Value = Option<(String, &'p Node)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.child(v).map(|n| (v.to_owned(), n)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::engine::plan::Plan;

    fn plan(fields: &str, items: &str) -> Plan {
        let op = format!(
            r#"
        identity: [member_id]
        request: {{method: GET, path: /c}}
        response:
          success: [{{path: $.code, in: [0]}}]
          error_message: $.msg
          items: {items}
        fields: {fields}
"#
        );
        crate::engine::plan::one_operation(&op).unwrap()
    }

    const FIELDS: &str = "{id: $.id, name: {path: [$.title, $.t.name]}, status: {value: usable}, channels: {path: $.ch, convert: names}}";

    #[test]
    fn only_the_members_some_path_reads_are_kept() {
        let plan = plan(FIELDS, "$.data.list");
        let p = plan.routes[0].targets[0].projection.as_ref().unwrap();
        let answer = json!({
            "code": 0, "msg": "ok", "trace": {"id": "x"},
            "data": {"total": 2, "list": [
                {"id": "a", "title": "A", "junk": {"id": 1}, "t": {"name": "n", "kind": 1},
                 "ch": [{"id": 1, "name": "c"}]},
                {"id": "b", "t": {"kind": 2}, "ch": "text"},
            ]},
        });
        let read = p.read(answer.to_string().as_bytes()).unwrap();
        assert_eq!(
            read,
            json!({
                "code": 0, "msg": "ok",
                "data": {"list": [
                    // where a path ends the value is whole: `names` sees every member
                    {"id": "a", "title": "A", "t": {"name": "n"}, "ch": [{"id": 1, "name": "c"}]},
                    {"id": "b", "t": {}, "ch": "text"},
                ]},
            })
        );
    }

    #[test]
    fn items_given_as_one_object_are_projected_as_an_item() {
        let plan = plan(FIELDS, "$.data");
        let p = plan.routes[0].targets[0].projection.as_ref().unwrap();
        let read = p
            .read(br#"{"code":0,"data":{"id":"a","other":[1],"t":{"name":"n","x":1}}}"#)
            .unwrap();
        assert_eq!(
            read,
            json!({"code": 0, "data": {"id": "a", "t": {"name": "n"}}})
        );
    }

    #[test]
    fn lists_no_path_enters_keep_their_type_but_not_their_elements() {
        let plan = plan(FIELDS, "$.data.list");
        let p = plan.routes[0].targets[0].projection.as_ref().unwrap();
        let read = p.read(br#"{"code":[1,2],"data":[3]}"#).unwrap();
        assert_eq!(read, json!({"code": [1, 2], "data": []}));
    }

    #[test]
    fn scalars_where_a_path_goes_deeper_are_read_as_they_are() {
        // `$.data.list` is entered, not kept whole: a vendor answering a scalar there must be
        // told apart from one answering nothing ("holds a number", not "has no `$.data.list`")
        let plan = plan(FIELDS, "$.data.list");
        let p = plan.routes[0].targets[0].projection.as_ref().unwrap();
        for scalar in [
            "true",
            "false",
            "-3",
            "7",
            "18446744073709551615",
            "1.5",
            r#""s""#,
            "null",
        ] {
            for body in [
                format!(r#"{{"code":0,"data":{scalar}}}"#),
                format!(r#"{{"code":0,"data":{{"list":{scalar}}}}}"#),
                format!(r#"{{"code":0,"data":{{"list":[{scalar}]}}}}"#),
            ] {
                let whole: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(p.read(body.as_bytes()).unwrap(), whole, "{body}");
            }
        }
    }

    #[test]
    fn a_path_that_is_not_plain_reads_whole_answers() {
        for (fields, items) in [
            (FIELDS, "$.data[*]"),
            ("{id: $..id, status: {value: usable}}", "$.data"),
            ("{id: $.id, status: {value: usable}}", "$.data[?@.id]"),
        ] {
            let plan = plan(fields, items);
            assert!(
                plan.routes[0].targets[0].projection.is_none(),
                "{fields} {items}"
            );
        }
        // and a path to the item itself keeps each item whole
        let plan = plan("{id: $.id, name: $, status: {value: usable}}", "$.data");
        let p = plan.routes[0].targets[0].projection.as_ref().unwrap();
        let read = p
            .read(br#"{"code":0,"x":1,"data":[{"id":"a","b":{"c":1}}]}"#)
            .unwrap();
        assert_eq!(
            read,
            json!({"code": 0, "data": [{"id": "a", "b": {"c": 1}}]})
        );
    }

    #[test]
    fn skipped_members_must_still_be_json() {
        let plan = plan(FIELDS, "$.data");
        let p = plan.routes[0].targets[0].projection.as_ref().unwrap();
        for bad in [
            &br#"{"code":0,"junk":[1,}"#[..],
            br#"{"code":0,"junk":tru}"#,
            br#"{"code":0} {}"#,
            br#"{"code":0,"data":[]"#,
        ] {
            assert!(p.read(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        // nesting past serde_json's limit (128) is refused where it is read; a skipped member
        // is walked without recursion, so its depth costs no stack and is let through
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let read = format!(r#"{{"code":0,"data":{{"ch":{}}}}}"#, nested(200));
        assert!(p.read(read.as_bytes()).is_err());
        let skipped = format!(r#"{{"code":0,"junk":{}}}"#, nested(200));
        assert_eq!(p.read(skipped.as_bytes()).unwrap(), json!({"code": 0}));
    }
}
