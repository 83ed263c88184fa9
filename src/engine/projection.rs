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
//! see in the whole answer — unless the conversion it goes to says what it reads inside it
//! (`Conversion::reads_within`: `names` reads a list's names, not the rest of each object),
//! and nothing else looks at it first; then only that is kept there. When that reader is the
//! list's only one and takes one member of each object (`Conversion::lift`), the member is
//! kept in the object's place and no object is built (a map and a key per element of every
//! list of names, and their removal again, were ~4 % of a miss).
//!
//! Only plain paths (names and indexes) can be projected: an operation with any other path
//! (filters, wildcards, descendants) has no projection and reads whole answers, as does
//! anything that shows an answer (`explain`, observers).
//!
//! Items are read into *slots* where they can be: instead of a map of members per item (a
//! `String` per name, a `BTreeMap` node per member, then a walk of the map for every path), each
//! value an item path ends at goes straight into its numbered slot, and the field mappings
//! find it by number (`extract::Slotted`). That needs every item path to be made of names only
//! and nothing else read at, above or inside the items (an envelope rule, a decrypted member:
//! decryption replaces what it opens); otherwise items are read as projected maps.
//!
//! Two differences from a full parse, on purpose: skipped members are checked for JSON syntax
//! but their text is not decoded, and serde_json's nesting limit (128 levels), which protects
//! the stack, applies only to what is kept whole.
//!
//! Answers are read by [`Scan`](super::scan), a scanner that hands each member's name to the
//! functions below, which read, skip or descend into its value. Driving sonic-rs through
//! serde's visitors (a `MapAccess` call, a seed or an `IgnoredAny` per member) cost ~360
//! instructions a member, most of it the protocol; the scanner's skipping is a loop with its
//! own stack, so no answer can make the gateway overflow a thread's stack however deeply a
//! member nobody reads nests. Whole answers (`read_whole`, no projection) are still parsed by
//! sonic-rs or serde_json.
use serde::Deserialize;
use serde_json::{Map, Value};

use super::conversions::{Conversion, Lift};
use super::extract::{ItemMapper, JsonPath, Seg, SlotRef};
use super::names::Names;
use super::plan::{PagingPlan, ResponsePlan};
use super::scan::Scan;

/// The members of an answer that an operation reads.
#[derive(Debug, Clone)]
pub struct Projection {
    root: Node,
    /// What an item is read into slots by, when its items are (see the module's comment).
    item: Option<Node>,
}

/// An answer read by a projection: the document, and the slots of the items read into slots.
/// Each such item stands in the document as an object naming its row ([`Projected::take_row`]):
/// by number, not by order, since the document may leave some out (a repeated member name
/// keeps the last; `items: $.data[1]` selects one of the list it numbered).
#[derive(Debug)]
pub struct Projected {
    pub doc: Value,
    pub items: Option<Rows>,
}

/// The slots of the items read into slots, row after row in one list: one allocation an
/// answer, not one an item.
#[derive(Debug, Default)]
pub struct Rows {
    values: Vec<Value>,
    /// Slots a row.
    width: usize,
    rows: usize,
    /// Which rows were taken ([`Projected::take_row`]), made by the first take.
    taken: Vec<bool>,
}

impl Rows {
    fn new(width: usize) -> Rows {
        Rows {
            // most answers hold a page of a few items
            values: Vec::with_capacity(width * 8),
            width,
            ..Rows::default()
        }
    }

    /// A new row of nulls, to fill.
    fn push(&mut self) -> &mut [Value] {
        let start = self.values.len();
        // made in place, not cloned from one (`resize` clones through `Value::clone`'s match)
        self.values
            .extend(std::iter::repeat_with(|| Value::Null).take(self.width));
        self.rows += 1;
        &mut self.values[start..]
    }

    #[cfg(test)]
    fn row(&self, i: usize) -> Option<&[Value]> {
        (i < self.rows).then(|| &self.values[i * self.width..(i + 1) * self.width])
    }
}

/// The member of an item's stand-in that holds its row (a name no JSON answer is parsed into:
/// nothing but the projection makes objects at an item's place when items are slotted).
const ROW: &str = "\0row";

impl Projected {
    /// The slots of `item` to use up (`ItemMapper::map_slots`): the row is left empty, read
    /// once like the item it stands for.
    pub fn take_row(&mut self, item: &Value) -> Option<&mut [Value]> {
        let rows = self.items.as_mut()?;
        let i = row_number(item).filter(|&i| i < rows.rows)?;
        if rows.taken.is_empty() {
            rows.taken = vec![false; rows.rows];
        }
        if std::mem::replace(&mut rows.taken[i], true) {
            return Some(&mut []);
        }
        Some(&mut rows.values[i * rows.width..(i + 1) * rows.width])
    }

    /// The slots of `item`, left in place (the tests compare them with maps).
    #[cfg(test)]
    fn row_of(&self, item: &Value) -> Option<&[Value]> {
        self.items.as_ref()?.row(row_number(item)?)
    }
}

/// The row an item's stand-in names, when `item` is one.
fn row_number(item: &Value) -> Option<usize> {
    usize::try_from(item.get(ROW)?.as_u64()?).ok()
}

/// What is kept of one value: all of it, or some members of an object and, of a list, each
/// element's own projection.
#[derive(Debug, Clone, Default)]
struct Node {
    whole: bool,
    /// A path ends here, but what reads the value reads only what the nodes below keep
    /// ([`Conversion::reads_within`](super::conversions::Conversion::reads_within)): the value
    /// is kept (a slot of its own, like a whole one), cut down to them.
    kept: bool,
    /// A kept list whose only reader takes one member of each object in the object's place
    /// ([`Conversion::lift`]): no object is built there.
    lift: Option<Lift>,
    /// Looked up once per member of the answer (`Names`: a binary search of names was a
    /// quarter of the parse, in `memcmp`; a `HashMap` ~5 % of a vendor call).
    keys: Names<Node>,
    /// A list's elements (any index a path names: all of them, projected alike).
    elements: Option<Box<Node>>,
    /// An object here is an item, read into slots by the projection's item tree.
    item: bool,
    /// (item tree) The slot this value is read into, whole.
    slot: Option<u16>,
    /// (item tree) The slots of the values below this one: emptied when a member is met again
    /// (the last of a repeated name wins, as in a map).
    below: std::ops::Range<u16>,
}

impl Node {
    /// A path ends at `segs`: everything below is read by someone. (Nodes made below one
    /// that is already whole are never looked at: `read` reads a whole node whole.)
    fn insert(&mut self, segs: &[Seg]) {
        *self.at(segs) = Node {
            whole: true,
            ..Node::default()
        };
    }

    /// A path ends at `segs`, and its value goes to `to`, which may read less than all of it
    /// (`None`: something reads all of it).
    fn insert_reading(&mut self, segs: &[Seg], to: Option<&dyn Conversion>) {
        let Some(within) = to.and_then(|c| c.reads_within()) else {
            return self.insert(segs);
        };
        let node = self.at(segs);
        if node.whole {
            return;
        }
        // only a first and only reader may have members lifted (`at` drops the lift when
        // another path goes through, a second reader ending here drops it below)
        let first = !node.kept && node.keys.is_empty() && node.elements.is_none();
        node.kept = true;
        for inner in within {
            node.insert(inner);
        }
        node.lift = to.and_then(|c| c.lift()).filter(|_| first).cloned();
    }

    /// Whether a path ends here (the value is kept, whole or cut down).
    fn ends(&self) -> bool {
        self.whole || self.kept
    }

    /// The node at `segs`, made as needed.
    fn at(&mut self, segs: &[Seg]) -> &mut Node {
        if !segs.is_empty() {
            // something reads inside it besides the lifting reader: the objects stay
            self.lift = None;
        }
        match segs.split_first() {
            None => self,
            Some((Seg::Key(k), rest)) => self.member(k).at(rest),
            Some((Seg::Index(_), rest)) => self.elements.get_or_insert_default().at(rest),
        }
    }

    fn member(&mut self, name: &str) -> &mut Node {
        self.keys.get_or_default(name)
    }

    fn child(&self, name: &str) -> Option<&Node> {
        self.keys.get(name)
    }

    /// Numbers the values read whole, depth first, so that the slots below each node are one
    /// range; None past `u16::MAX` slots.
    fn number(&mut self, next: &mut u16) -> Option<()> {
        let start = *next;
        if self.ends() {
            self.slot = Some(start);
            *next = next.checked_add(1)?;
        } else {
            for child in self.keys.values_mut() {
                child.number(next)?;
            }
        }
        self.below = start..*next;
        Some(())
    }

    /// Where `segs` (names only) is found: the first value on the way that is read whole.
    fn slot_ref(&self, segs: &[Seg]) -> Option<SlotRef> {
        let mut node = self;
        for (i, seg) in segs.iter().enumerate() {
            let Seg::Key(k) = seg else { return None };
            node = node.child(k)?;
            if let Some(slot) = node.slot {
                let rest = segs[i + 1..].iter().map(|s| match s {
                    Seg::Key(k) => Some(k.clone()),
                    Seg::Index(_) => None,
                });
                return Some(SlotRef {
                    slot,
                    rest: rest.collect::<Option<_>>()?,
                });
            }
        }
        None
    }

    /// Whether nothing at, above or below the end of `segs` is read (the envelope stays clear
    /// of the items and of everything on the way to them).
    fn clear_down_to(&self, segs: &[Seg]) -> bool {
        let mut node = self;
        for seg in segs {
            if node.ends() {
                return false;
            }
            let next = match seg {
                Seg::Key(k) => node.child(k),
                Seg::Index(_) => node.elements.as_deref(),
            };
            match next {
                Some(n) => node = n,
                None => return true,
            }
        }
        !node.ends() && node.keys.is_empty() && node.elements.is_none()
    }
}

impl Projection {
    /// The projection of one operation's answers: `items` with the paths each item is read
    /// by (the `mapper`'s), and every other path read from the answer. None when a path is not
    /// plain, or when the whole answer is read anyway. When items are read into slots, each
    /// of the mapper's paths is given its place.
    pub fn of(
        response: &ResponsePlan,
        paging: Option<&PagingPlan>,
        mapper: &mut ItemMapper,
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
        let items_at = r.items.segments()?;
        let clear = root.clear_down_to(items_at);
        let mut item_paths = Vec::new();
        let mut reading = Vec::new();
        for spec in mapper.fields.iter().flatten() {
            spec.paths_reading(&mut |p, to| {
                item_paths.push(p);
                reading.push(to);
            });
        }
        // the items path selects a list of items or one item (an object): project both ways
        let items = root.at(items_at);
        // every element of a list of items is an item, even when no path goes into them
        items.elements.get_or_insert_default();
        for (p, to) in item_paths.iter().zip(&reading) {
            let segs = p.segments()?;
            items.insert_reading(segs, *to);
            items
                .elements
                .get_or_insert_default()
                .insert_reading(segs, *to);
        }
        if root.whole {
            return None;
        }
        let mut projection = Projection { root, item: None };
        let names_only = |p: &&JsonPath| {
            p.segments()
                .is_some_and(|s| !s.is_empty() && s.iter().all(|s| matches!(s, Seg::Key(_))))
        };
        if !clear || item_paths.is_empty() || !item_paths.iter().all(names_only) {
            return Some(projection);
        }
        let mut tree = Node::default();
        for (p, to) in item_paths.iter().zip(&reading) {
            tree.insert_reading(p.segments()?, *to);
        }
        let mut next = 0;
        if tree.number(&mut next).is_none() {
            return Some(projection);
        }
        let Some(places) = item_paths
            .iter()
            .map(|p| tree.slot_ref(p.segments()?))
            .collect::<Option<Vec<SlotRef>>>()
        else {
            return Some(projection);
        };
        let mut places = places.into_iter();
        for spec in mapper.fields.iter_mut().flatten() {
            spec.paths_mut(&mut |p| p.set_slot(places.next()));
        }
        mapper.plan_moves();
        let items = projection.root.at(items_at);
        items.item = true;
        items.elements.get_or_insert_default().item = true;
        projection.item = Some(tree);
        Some(projection)
    }

    /// Whether items are read into slots.
    pub fn slots_items(&self) -> bool {
        self.item.is_some()
    }

    /// Parses `body`, keeping only the projected members, items as maps of them.
    pub fn read(&self, body: &[u8]) -> Result<Value, NotJson> {
        let mut scan = Scan::new(body)?;
        let doc = read(&mut scan, &self.root, None)?;
        scan.end()?;
        Ok(doc)
    }

    /// Parses `body`, keeping only the projected members, items into slots where they can be.
    pub fn read_items(&self, body: &[u8]) -> Result<Projected, NotJson> {
        let Some(tree) = &self.item else {
            return Ok(Projected {
                doc: self.read(body)?,
                items: None,
            });
        };
        let mut items = Rows::new(usize::from(tree.below.end));
        let mut slotting = Slotting {
            tree,
            items: &mut items,
        };
        let mut scan = Scan::new(body)?;
        let doc = read(&mut scan, &self.root, Some(&mut slotting))?;
        scan.end()?;
        Ok(Projected {
            doc,
            items: Some(items),
        })
    }
}

/// An answer that is not JSON (or nests deeper than the tokenizer reads).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotJson(pub(super) String);

/// Opening brackets an answer may have and still be read by sonic-rs, whose skipping recurses
/// once per level (~100–250 bytes of stack each in a release build, measured): 2,048 levels
/// stay well inside a 2 MiB worker stack, and a page of 500 items, each an object with a few
/// nested ones, is still under it.
const SONIC_DEPTH: usize = 2_048;

/// Whether this build reads answers by sonic-rs at all: unoptimised, its generic code spends
/// tens of KB of stack a level (a 500-deep test answer overflowed 16 MiB), so such builds
/// (`cargo test`) read every answer by serde_json; `.ci/run` runs the library's tests in
/// release too, where answers go through sonic-rs.
const SONIC: bool = !cfg!(debug_assertions);

/// A whole answer (no projection), by sonic-rs when it cannot nest deeper than
/// [`SONIC_DEPTH`] (no more opening brackets than that), otherwise by serde_json.
pub fn read_whole(body: &[u8]) -> Result<Value, NotJson> {
    // memchr's SIMD search (AVX2 when the CPU has it): a byte-by-byte count cost more than
    // sonic-rs saved
    if SONIC && memchr::memchr2_iter(b'[', b'{', body).count() <= SONIC_DEPTH {
        let mut de = sonic_rs::Deserializer::from_slice(body);
        let v = Value::deserialize(&mut de).map_err(|e| NotJson(e.to_string()))?;
        de.end().map_err(|e| NotJson(e.to_string()))?;
        Ok(v)
    } else {
        let mut de = serde_json::Deserializer::from_slice(body);
        let v = Value::deserialize(&mut de).map_err(|e| NotJson(e.to_string()))?;
        de.end().map_err(|e| NotJson(e.to_string()))?;
        Ok(v)
    }
}

/// Where items go when they are read into slots.
struct Slotting<'p, 'o> {
    tree: &'p Node,
    items: &'o mut Rows,
}

/// Reads the next value as `node` says: whole, or only the members and elements below it.
fn read(
    scan: &mut Scan<'_>,
    node: &Node,
    mut slotting: Option<&mut Slotting<'_, '_>>,
) -> Result<Value, NotJson> {
    if node.whole {
        return scan.value();
    }
    match scan.peek()? {
        b'{' => {
            if node.item
                && let Some(s) = slotting
            {
                let row = s.items.rows;
                fill(scan, s.tree, s.items.push())?;
                // its place in the document (an object, for the envelope's rules), naming its row
                let mut stand_in = Map::new();
                stand_in.insert(ROW.to_owned(), Value::from(row));
                return Ok(Value::Object(stand_in));
            }
            let mut out = Map::new();
            scan.members(|scan, name| match node.child(&name) {
                Some(child) => {
                    let v = read(scan, child, slotting.as_deref_mut())?;
                    out.insert(name.into_owned(), v);
                    Ok(())
                }
                None => scan.skip(),
            })?;
            Ok(Value::Object(out))
        }
        b'[' => {
            let mut out = Vec::new();
            if let Some(lift) = &node.lift {
                scan.elements(|scan| {
                    out.push(lifted(scan, lift)?);
                    Ok(())
                })?;
            } else if let Some(each) = &node.elements {
                scan.elements(|scan| {
                    out.push(read(scan, each, slotting.as_deref_mut())?);
                    Ok(())
                })?;
            } else {
                // no path goes into this list: its type stays, its elements are not read
                scan.skip()?;
            }
            Ok(Value::Array(out))
        }
        _ => scan.value(),
    }
}

/// Reads the value of an item's member (or of an object inside it) into the item's slots:
/// only an object has members to read (a path through anything else finds nothing, as in a
/// map), but the rest is still checked for syntax.
fn fill(scan: &mut Scan<'_>, node: &Node, slots: &mut [Value]) -> Result<(), NotJson> {
    if scan.peek()? != b'{' {
        return scan.skip();
    }
    scan.members(|scan, name| {
        let Some(node) = node.child(&name) else {
            return scan.skip();
        };
        match node.slot {
            Some(slot) if node.whole => slots[usize::from(slot)] = scan.value()?,
            Some(slot) => slots[usize::from(slot)] = read(scan, node, None)?,
            None => {
                // the last of a repeated name wins, as in a map
                slots[usize::from(node.below.start)..usize::from(node.below.end)].fill(Value::Null);
                fill(scan, node, slots)?;
            }
        }
        Ok(())
    })
}

/// An element of a list whose objects are lifted: an object's member as [`Lift::of`] makes
/// it, anything else as a projected element would be (scalars as they are, a list empty).
fn lifted(scan: &mut Scan<'_>, lift: &Lift) -> Result<Value, NotJson> {
    match scan.peek()? {
        b'{' => {
            let mut found = None;
            scan.members(|scan, name| {
                if name == lift.member {
                    // the last of a repeated name wins, as in a map
                    found = Some(scan.value()?);
                    Ok(())
                } else {
                    scan.skip()
                }
            })?;
            Ok((lift.of)(found))
        }
        b'[' => {
            scan.skip()?;
            Ok(Value::Array(Vec::new()))
        }
        _ => scan.value(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::engine::plan::Plan;

    fn plan(fields: &str, items: &str) -> Plan {
        plan_with("error_message: $.msg", fields, items)
    }

    /// An operation reading `items` with `fields`, its envelope `success` and `rules`.
    fn plan_with(rules: &str, fields: &str, items: &str) -> Plan {
        let op = format!(
            r#"
        identity: [member_id]
        request: {{method: GET, path: /c}}
        response:
          success: [{{path: $.code, in: [0]}}]
          {rules}
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
                    // where a path ends the value is whole, but for what its conversion
                    // reads inside it: `names`, the `name` of a list's objects, lifted into
                    // their places
                    {"id": "a", "title": "A", "t": {"name": "n"}, "ch": ["c"]},
                    {"id": "b", "t": {}, "ch": "text"},
                ]},
            })
        );
    }

    #[test]
    fn what_a_conversion_reads_is_widened_by_every_other_path_to_its_value() {
        let body = br#"{"code":0,"data":[{"id":"a","ch":{"title":"t","name":"n","x":1}},{"id":"b","ch":[{"name":"n","x":1}]}]}"#;
        for (fields, ch) in [
            // a longer path into it: its member is kept too (and found in the slot)
            (
                "{id: $.id, status: {value: usable}, channels: {path: $.ch, convert: names}, name: $.ch.title}",
                [json!({"title": "t"}), json!([{"name": "n"}])],
            ),
            // the same value read whole by another field: whole
            (
                "{id: $.id, status: {value: usable}, channels: {path: $.ch, convert: names}, name: $.ch}",
                [
                    json!({"title": "t", "name": "n", "x": 1}),
                    json!([{"name": "n", "x": 1}]),
                ],
            ),
            (
                "{id: $.id, status: {value: usable}, name: $.ch, channels: {path: $.ch, convert: names}}",
                [
                    json!({"title": "t", "name": "n", "x": 1}),
                    json!([{"name": "n", "x": 1}]),
                ],
            ),
            // `names` alone: each object's name in its place
            (
                "{id: $.id, status: {value: usable}, channels: {path: $.ch, convert: names}}",
                [json!({}), json!(["n"])],
            ),
            // two readers of one list: the objects stay, with what each reads
            (
                "{id: $.id, status: {value: usable}, channels: {path: $.ch, convert: names}, \
                  product_kinds: {path: $.ch, convert: names}}",
                [json!({}), json!([{"name": "n"}])],
            ),
            (
                "{id: $.id, status: {value: usable}, channels: {path: $.ch, convert: names}, \
                  product_kinds: {path: $.ch, convert: names, names_key: x}}",
                [json!({}), json!([{"name": "n", "x": 1}])],
            ),
            // a `map` looks at the value before the conversion: whole
            (
                "{id: $.id, status: {value: usable}, channels: {path: $.ch, convert: names, map: {a: b}}}",
                [
                    json!({"title": "t", "name": "n", "x": 1}),
                    json!([{"name": "n", "x": 1}]),
                ],
            ),
        ] {
            let plan = plan(fields, "$.data");
            let op = &plan.routes[0].targets[0];
            let p = op.projection.as_ref().unwrap();
            let read = p.read(body).unwrap();
            assert_eq!(read["data"][0]["ch"], ch[0], "{fields}");
            assert_eq!(read["data"][1]["ch"], ch[1], "{fields}");
            assert!(p.slots_items(), "{fields}");
        }
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

    /// The objects at the items path of a projected document (`$.data.list` or `$.data`).
    fn objects(doc: &serde_json::Value) -> Vec<&serde_json::Value> {
        match &doc["data"] {
            serde_json::Value::Array(list) => list.iter().filter(|v| v.is_object()).collect(),
            serde_json::Value::Object(m) => match m.get("list") {
                Some(serde_json::Value::Array(list)) => {
                    list.iter().filter(|v| v.is_object()).collect()
                }
                _ => vec![&doc["data"]],
            },
            _ => Vec::new(),
        }
    }

    /// `body` read as maps and into slots, after checking that each of `paths` finds the same
    /// in every item's slots as in its map.
    fn read_both_ways(
        p: &super::Projection,
        body: &str,
        paths: &[&crate::engine::extract::JsonPath],
    ) -> (serde_json::Value, super::Projected) {
        use crate::engine::extract::{Item, Slotted};
        let maps = p.read(body.as_bytes()).unwrap();
        let read = p.read_items(body.as_bytes()).unwrap();
        let (maps_items, slotted) = (objects(&maps), objects(&read.doc));
        assert_eq!(slotted.len(), maps_items.len(), "{body}");
        for (stand_in, object) in slotted.iter().zip(&maps_items) {
            let slots = read.row_of(stand_in).expect("a row");
            for path in paths {
                let got = Slotted(slots);
                assert_eq!(got.at(path), object.at(path), "{} in {body}", path.source());
            }
        }
        (maps, read)
    }

    #[test]
    fn items_read_into_slots_find_what_their_maps_would() {
        use crate::engine::extract::JsonPath;
        // alternatives, a path and a longer one below it, a condition's path, a nested list
        let fields = "{id: {path: [$.id, $.alt]}, name: {path: [$.t, $.t.name]}, \
                      code: {path: $.c, when: {path: $.t.kind, in: [1]}}, \
                      channels: {path: $.ch.list, convert: names}, status: {value: usable}}";
        for items in ["$.data.list", "$.data"] {
            let plan = plan(fields, items);
            let op = &plan.routes[0].targets[0];
            let p = op.projection.as_ref().unwrap();
            assert!(p.slots_items(), "{items}");
            let mut paths: Vec<&JsonPath> = Vec::new();
            for spec in op.mapper.fields.iter().flatten() {
                spec.paths(&mut |path| paths.push(path));
            }
            let item = |body: &str| match items {
                "$.data.list" => {
                    format!(r#"{{"code":0,"data":{{"n":1,"list":[{body},7,{{}},{body}]}}}}"#)
                }
                _ => format!(r#"{{"code":0,"data":{body}}}"#),
            };
            for body in [
                r#"{"id":"a","t":{"name":"n","kind":1},"c":"x","ch":{"list":[{"name":"w"}]}}"#,
                // the last of a repeated name wins, below a repeated object too
                r#"{"id":"a","id":"b","t":{"name":"n","kind":1},"t":{"kind":2},"ch":{"list":1},"ch":{"x":1}}"#,
                // nulls are nothing, so the alternative is taken; scalars and lists have no members
                r#"{"id":null,"alt":3,"t":"text","ch":[{"list":[1]}],"junk":{"id":1}}"#,
                r#"{"t":{"name":null,"kind":"1","deep":{"t":1}},"c":{"k":[1,{"a":2}]},"ch":{"list":null}}"#,
                "{}",
            ] {
                let body = item(body);
                let (maps, read) = read_both_ways(p, &body, &paths);
                // the document is the same with each item's stand-in, numbered, in its place
                let mut expected = maps.clone();
                let mut row = 0;
                let mut stand_in = || {
                    row += 1;
                    json!({super::ROW: row - 1})
                };
                let at = if items == "$.data" {
                    &mut expected["data"]
                } else {
                    &mut expected["data"]["list"]
                };
                match at {
                    serde_json::Value::Array(list) => list
                        .iter_mut()
                        .filter(|v| v.is_object())
                        .for_each(|v| *v = stand_in()),
                    v => *v = stand_in(),
                }
                assert_eq!(read.doc, expected, "{body}");
                assert_eq!(read.items.map(|i| i.rows), Some(row), "{body}");
            }
        }
    }

    #[test]
    fn items_naming_members_in_another_order_or_escaped_are_read_alike() {
        use crate::engine::extract::{Item, JsonPath, Slotted};
        // items of one answer that differ in order and spelling: a name at another position,
        // an unknown one where a known one was, the same name escaped, a name that only starts
        // like a known one, and a repeated one all read as a map would
        let fields = "{id: $.id, name: $.t.name, code: $.c, status: {value: usable}}";
        let plan = plan(fields, "$.data");
        let op = &plan.routes[0].targets[0];
        let p = op.projection.as_ref().unwrap();
        assert!(p.slots_items());
        let mut paths: Vec<&JsonPath> = Vec::new();
        for spec in op.mapper.fields.iter().flatten() {
            spec.paths(&mut |path| paths.push(path));
        }
        let body = r#"{"code":0,"data":[
            {"id":"a","t":{"name":"n1"},"c":"x"},
            {"id":"b","t":{"name":"n2"},"c":"y"},
            {"c":"z","id":"c","t":{"name":"n3"}},
            {"junk":1,"t":{"name":"n4"},"id":"d"},
            {"\u0069d":"e","t":{"name":"n5"},"c":"w"},
            {"idx":"f","t":{"name":"n6"},"cc":"v"},
            {"id":"g","id":"h","t":{"name":"n7"},"c":"u","c":"t"},
            {"i":"k","t":{"name":"n8"}}
        ]}"#;
        let (_, read) = read_both_ways(p, body, &paths);
        let slotted = objects(&read.doc);
        assert_eq!(slotted.len(), 8);
        let ids: Vec<_> = slotted
            .iter()
            .map(|stand_in| {
                Slotted(read.row_of(stand_in).unwrap())
                    .at(paths[0])
                    .cloned()
            })
            .collect();
        let id = |s: &str| Some(serde_json::Value::from(s));
        assert_eq!(
            ids,
            [
                id("a"),
                id("b"),
                id("c"),
                id("d"),
                id("e"),
                None,
                id("h"),
                None
            ]
        );
    }

    #[test]
    fn a_row_is_taken_once_like_the_item_it_stands_for() {
        let plan = plan(FIELDS, "$.data");
        let p = plan.routes[0].targets[0].projection.as_ref().unwrap();
        let body = br#"{"code":0,"data":[{"id":"a"},{"id":"b"}]}"#;
        let mut read = p.read_items(body).unwrap();
        let doc = read.doc.clone();
        let items = objects(&doc);
        let first = read.take_row(items[1]).expect("a row").to_vec();
        assert!(first.contains(&serde_json::Value::from("b")), "{first:?}");
        assert_eq!(read.take_row(items[1]).map(|r| r.len()), Some(0));
        let other = read.take_row(items[0]).expect("a row").to_vec();
        assert!(other.contains(&serde_json::Value::from("a")), "{other:?}");
        // anything but a stand-in has no row
        assert!(read.take_row(&serde_json::json!({"id": "c"})).is_none());
    }

    #[test]
    fn values_moved_out_of_slots_map_as_copied_ones_do() {
        // moved: id (either alternative), name, kind, channels, product_kinds, image_url; read
        // in place: vendor_status and status share a slot, code's `when` reads its own
        let fields = "{id: {path: [$.id, $.alt]}, name: $.t, kind: $.kd, \
                      code: {path: $.c, when: {path: $.c, present: true}}, \
                      channels: {path: $.ch, convert: names}, product_kinds: $.pk, \
                      image_url: $.img, vendor_status: $.s, \
                      status: {path: $.s, map: {\"1\": usable}, default: used}}";
        let plan = plan(fields, "$.data");
        let op = &plan.routes[0].targets[0];
        let p = op.projection.as_ref().unwrap();
        assert!(p.slots_items());
        let moved: Vec<&str> = (op.mapper.schema.iter().zip(&op.mapper.moves))
            .filter(|(_, m)| m.is_some())
            .map(|(d, _)| d.name)
            .collect();
        assert_eq!(
            moved,
            [
                "id",
                "name",
                "kind",
                "channels",
                "product_kinds",
                "image_url"
            ]
        );
        for item in [
            r#"{"id":"a","t":"券","kd":"cash","c":"x","ch":[{"name":"w"},{"id":1},{"name":7},{"name":true},"s",3,null],"pk":"a, b","img":"/i.png","s":"1"}"#,
            r#"{"alt":5,"t":12.5,"kd":"nope","ch":"","pk":[{"name":{"x":1}}],"img":"","s":2}"#,
            r#"{"id":null,"alt":"b","t":"  ","kd":"","ch":null,"pk":[],"s":"1"}"#,
            r#"{"id":"a","t":[1],"s":"1"}"#,
            r#"{"id":"a","t":true,"ch":{"name":"x"},"s":"1"}"#,
            r#"{"t":"no id","s":"1"}"#,
        ] {
            let body = format!(r#"{{"code":0,"data":{item}}}"#);
            let whole: serde_json::Value = serde_json::from_str(item).unwrap();
            let mut read = p.read_items(body.as_bytes()).unwrap();
            let slots = read.take_row(&read.doc["data"].clone()).expect("a row");
            assert_eq!(op.mapper.map_slots(slots), op.mapper.map(&whole), "{item}");
        }
    }

    #[test]
    fn items_are_read_as_maps_where_slots_cannot_say_the_same() {
        let item_fields = "{id: $.id, status: {value: usable}}";
        let envelope = |rules: &str, fields: &str| plan_with(rules, fields, "$.data.list");
        for (rules, fields) in [
            // the envelope reads the items, a member of one, or something above them whole
            ("empty: [{path: $.data.list, present: false}]", item_fields),
            ("error_code: $.data.list[0].code", item_fields),
            ("error_message: $.data", item_fields),
            // an item path with an index, or the item itself
            ("", "{id: \"$.ids[0]\", status: {value: usable}}"),
            ("", "{id: $.id, name: $, status: {value: usable}}"),
        ] {
            let plan = envelope(rules, fields);
            let p = plan.routes[0].targets[0].projection.as_ref().unwrap();
            assert!(!p.slots_items(), "{rules} {fields}");
            let body = br#"{"code":0,"data":{"list":[{"id":"a","ids":["b"]}]}}"#;
            let read = p.read_items(body).unwrap();
            assert!(read.items.is_none());
            assert_eq!(read.doc, p.read(body).unwrap(), "{rules} {fields}");
            assert_ne!(read.doc["data"]["list"][0], json!({}), "{rules} {fields}");
        }
        // and with none of those, they are
        let plan = envelope("error_code: $.data.code", item_fields);
        assert!(
            plan.routes[0].targets[0]
                .projection
                .as_ref()
                .unwrap()
                .slots_items()
        );
    }

    #[test]
    fn items_nothing_is_read_from_are_still_items() {
        // every field a constant: no path goes into the items, but each is still a coupon
        let fields = "{id: {value: x}, name: {value: n}, status: {value: usable}}";
        let body = br#"{"code":0,"data":{"list":[{"id":"a"},{"id":"b"},{}]}}"#;
        let plan = plan(fields, "$.data.list");
        let p = plan.routes[0].targets[0].projection.as_ref().unwrap();
        let read = p.read_items(body).unwrap();
        let whole: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(
            objects(&read.doc).len(),
            objects(&whole).len(),
            "{}",
            read.doc
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
        // Depth, on half of a runtime worker's 2 MiB stack: nesting past serde_json's limit
        // (128) is refused where a value is kept whole, and a skipped member's depth is no
        // error, however deep (the scanner skips by a loop).
        let p = p.clone();
        let on_a_stack = move || {
            let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
            let read = format!(r#"{{"code":0,"data":{{"t":{{"name":{}}}}}}}"#, nested(300));
            assert!(p.read(read.as_bytes()).is_err());
            let read = format!(r#"{{"code":0,"data":{{"t":{{"name":{}}}}}}}"#, nested(120));
            assert!(p.read(read.as_bytes()).is_ok());
            let skipped = format!(r#"{{"code":0,"junk":{}}}"#, nested(100_000));
            assert_eq!(p.read(skipped.as_bytes()).unwrap(), json!({"code": 0}));
            let unclosed = format!(r#"{{"code":0,"junk":{}}}"#, &nested(100_000)[..199_999]);
            assert!(p.read(unclosed.as_bytes()).is_err());
        };
        std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(on_a_stack)
            .unwrap()
            .join()
            .expect("no stack overflow, every assertion held");
    }
}
