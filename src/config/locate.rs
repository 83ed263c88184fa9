//! Where each key of routes.yaml stands, so that every configuration error can name its line.
//!
//! figment merges the file with the environment into sorted maps and keeps no positions, so the
//! file is read a second time with marked-yaml (spans and key order) into a flat index keyed by
//! dotted path (`vendors.op.operations.list_coupons.response.items`). The index also remembers
//! the order of keys in each mapping: routes.yaml order is the order of `sources` in answers
//! and of fields in request bodies.
use std::collections::HashMap;

use marked_yaml::Node;

/// Line and column (both 1-based) of a node in the YAML file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Positions and key order of one YAML document.
#[derive(Debug, Default, Clone)]
pub struct YamlIndex {
    file: String,
    /// Paths of scalars with a value (not `~`/`null`/empty).
    valued: std::collections::HashSet<String>,
    positions: HashMap<String, Location>,
    key_order: HashMap<String, Vec<String>>,
}

impl YamlIndex {
    /// Indexes `text`; a syntax error comes back with its location.
    pub fn parse(file: &str, text: &str) -> Result<Self, (String, Option<Location>)> {
        let options = marked_yaml::LoaderOptions::default().error_on_duplicate_keys(true);
        let root =
            marked_yaml::parse_yaml_with_options(0, text, options).map_err(|e| load_error(&e))?;
        let mut index = YamlIndex {
            file: file.to_owned(),
            ..Default::default()
        };
        index.walk(String::new(), &root);
        Ok(index)
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    /// The location of `path`, or of its nearest ancestor that the file has (a key that
    /// came only from the environment has no line of its own).
    pub fn locate(&self, path: &str) -> Option<Location> {
        let mut p = path;
        loop {
            if let Some(loc) = self.positions.get(p) {
                return Some(*loc);
            }
            match p.rfind('.') {
                Some(i) => p = &p[..i],
                None => return None,
            }
        }
    }

    /// Whether the file gives `path` a non-null scalar value.
    pub fn has_scalar_value(&self, path: &str) -> bool {
        self.valued.contains(path)
    }

    /// Keys of the mapping at `path` in file order (empty when the file has none there).
    pub fn keys(&self, path: &str) -> &[String] {
        self.key_order.get(path).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Orders `names` by their position under `path` in the file; names the file does not
    /// have (added through the environment) follow in the order given.
    pub fn order<'a>(
        &self,
        path: &str,
        names: impl IntoIterator<Item = &'a String>,
    ) -> Vec<String> {
        let in_file = self.keys(path);
        let mut names: Vec<String> = names.into_iter().cloned().collect();
        names.sort_by_key(|n| in_file.iter().position(|k| k == n).unwrap_or(usize::MAX));
        names
    }

    fn walk(&mut self, path: String, node: &Node) {
        if let Some(m) = node.span().start() {
            self.positions.insert(
                path.clone(),
                Location {
                    line: m.line(),
                    column: m.column(),
                },
            );
        }
        match node {
            Node::Scalar(sc) => {
                let v = sc.as_str();
                if !(v.is_empty() || v == "~" || v == "null" || v == "Null" || v == "NULL") {
                    self.valued.insert(path.clone());
                }
            }
            Node::Mapping(map) => {
                let mut keys = Vec::with_capacity(map.len());
                for (k, v) in map.iter() {
                    let key = k.as_str().to_owned();
                    let child = join(&path, &key);
                    // the key's own position is more useful than its value's for errors
                    if let Some(m) = k.span().start() {
                        self.positions.insert(
                            child.clone(),
                            Location {
                                line: m.line(),
                                column: m.column(),
                            },
                        );
                    }
                    self.walk_child(child, v);
                    keys.push(key);
                }
                self.key_order.insert(path, keys);
            }
            Node::Sequence(seq) => {
                for (i, v) in seq.iter().enumerate() {
                    self.walk(join(&path, &i.to_string()), v);
                }
            }
        }
    }

    /// Like `walk`, but keeps the key's position for the child path itself.
    fn walk_child(&mut self, path: String, node: &Node) {
        let key_pos = self.positions.get(&path).copied();
        self.walk(path.clone(), node);
        if let Some(pos) = key_pos {
            self.positions.insert(path, pos);
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn load_error(e: &marked_yaml::LoadError) -> (String, Option<Location>) {
    use marked_yaml::LoadError::*;
    let (msg, marker) = match e {
        TopLevelMustBeMapping(m) => ("the top level must be a mapping".to_owned(), Some(*m)),
        TopLevelMustBeSequence(m) => ("the top level must be a sequence".to_owned(), Some(*m)),
        UnexpectedAnchor(m) => ("anchors are not supported".to_owned(), Some(*m)),
        MappingKeyMustBeScalar(m) => ("mapping keys must be scalars".to_owned(), Some(*m)),
        UnexpectedTag(m) => ("explicit tags are not supported".to_owned(), Some(*m)),
        ScanError(m, e) => (format!("YAML syntax error: {e}"), Some(*m)),
        DuplicateKey(d) => (
            format!("duplicate key `{}`", d.key.as_str()),
            d.key.span().start().copied(),
        ),
    };
    (
        msg,
        marker.map(|m| Location {
            line: m.line(),
            column: m.column(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "server:\n  listen: 1.2.3.4:5\nvendors:\n  zz:\n    base_url: http://z\n  aa:\n    steps:\n      - name: one\n      - name: two\n";

    #[test]
    fn locates_keys_and_sequence_items() {
        let ix = YamlIndex::parse("r.yaml", DOC).unwrap();
        assert_eq!(
            ix.locate("server.listen"),
            Some(Location { line: 2, column: 3 })
        );
        assert_eq!(
            ix.locate("vendors.aa.steps.1.name").map(|l| l.line),
            Some(9)
        );
        // a key only the environment has falls back to its nearest ancestor in the file
        assert_eq!(ix.locate("vendors.zz.timeout_ms").map(|l| l.line), Some(4));
        assert_eq!(ix.locate("nothing.here"), None);
    }

    #[test]
    fn keeps_file_order_of_keys() {
        let ix = YamlIndex::parse("r.yaml", DOC).unwrap();
        assert_eq!(ix.keys("vendors"), ["zz", "aa"]);
        let names = ["aa".to_owned(), "new".to_owned(), "zz".to_owned()];
        assert_eq!(ix.order("vendors", names.iter()), ["zz", "aa", "new"]);
    }

    #[test]
    fn syntax_errors_carry_their_line() {
        let (msg, loc) = YamlIndex::parse("r.yaml", "a: [1, 2\nb: c\n").unwrap_err();
        assert!(msg.contains("YAML"), "{msg}");
        assert!(loc.is_some());
        let (msg, loc) = YamlIndex::parse("r.yaml", "a: 1\na: 2\n").unwrap_err();
        assert!(msg.contains("duplicate key `a`"), "{msg}");
        assert_eq!(loc.map(|l| l.line), Some(2));
    }
}
