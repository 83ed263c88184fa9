//! What names mean while one request is compiled: `member.*`, `cred.*`, `input.*`, `now.*`,
//! `nonce`, `var.*`, `page.*`, `request.*` and `auth.token`, each resolved to a [`Ref`] or
//! refused with the reason.
use std::borrow::Cow;
use std::cell::RefCell;

use secrecy::{ExposeSecret, SecretString};

use super::list;
use crate::config::{IdentityKind, PagingStyle};
use crate::engine::template::{Ref, Scope};
use crate::engine::time::{self, Rendering};

/// Name resolution for one request (an operation's or a token endpoint's).
pub struct OpScope<'a> {
    pub creds: Vec<&'a str>,
    /// Credential values, so keys made of them are prepared once (empty ones are not known).
    pub cred_values: &'a [SecretString],
    pub identity: &'a [IdentityKind],
    pub inputs: &'static [&'static str],
    /// Variables visible here (defined by earlier steps).
    pub vars: Vec<String>,
    pub paging: Option<PagingStyle>,
    /// Inside a signing step, where the rendered request can be read.
    pub in_step: bool,
    /// Names of the operation's value maps.
    pub maps: Vec<&'a str>,
    /// The vendor has token-endpoint auth (and this is not the token request itself).
    pub auth: bool,
    /// The clock renderings the request uses; `Ref::Now(i)` is entry i.
    pub clock: RefCell<Vec<Rendering>>,
}

impl OpScope<'_> {
    /// `now.s` and its kin: one of the layouts every vendor had before `| time:`.
    fn legacy_clock(&self, name: &str) -> Result<Ref, String> {
        let (layout, zone) = match name {
            "s" => ("epoch_s", time::zone("UTC")),
            "ms" => ("epoch_ms", time::zone("UTC")),
            "rfc3339" => ("rfc3339", Ok(time::canonical_zone())),
            "date" => ("date", Ok(time::canonical_zone())),
            other => {
                return Err(format!(
                    "unknown `now.{other}` (known: now.s, now.ms, now.rfc3339, now.date, or `now | time:LAYOUT | zone:ZONE`)"
                ));
            }
        };
        self.clock(Rendering {
            layout: time::layout(layout)?,
            zone: zone?,
        })
    }
}

impl Scope for OpScope<'_> {
    fn fixed(&self, r: Ref) -> Option<Cow<'_, str>> {
        match r {
            Ref::Cred(i) => self
                .cred_values
                .get(i)
                .map(|c| c.expose_secret())
                .filter(|c| !c.is_empty())
                .map(Cow::Borrowed),
            _ => None,
        }
    }

    fn clock(&self, rendering: Rendering) -> Result<Ref, String> {
        let mut clock = self.clock.borrow_mut();
        clock.push(rendering);
        Ok(Ref::Now(clock.len() - 1))
    }

    fn map_index(&self, name: &str) -> Option<usize> {
        self.maps.iter().position(|m| *m == name)
    }

    fn resolve(&self, name: &str) -> Result<Ref, String> {
        let (ns, rest) = name.split_once('.').unwrap_or((name, ""));
        match (ns, rest) {
            ("member", "id") | ("member", "openid") => {
                let (kind, r) = if rest == "id" {
                    (IdentityKind::MemberId, Ref::MemberId)
                } else {
                    (IdentityKind::Openid, Ref::MemberOpenid)
                };
                if self.identity.contains(&kind) {
                    Ok(r)
                } else {
                    Err(format!(
                        "`{name}` is used but the operation's `identity` does not list `{}`",
                        if rest == "id" { "member_id" } else { "openid" }
                    ))
                }
            }
            ("cred", c) => self
                .creds
                .iter()
                .position(|n| *n == c)
                .map(Ref::Cred)
                .ok_or_else(|| {
                    format!(
                        "`{name}`: the vendor declares no credential `{c}` (declared: {})",
                        list(&self.creds)
                    )
                }),
            ("input", i) => self
                .inputs
                .iter()
                .position(|n| *n == i)
                .map(Ref::Input)
                .ok_or_else(|| format!("`{name}`: this route has no input `{i}` (inputs: {})", list(self.inputs))),
            ("now", n) => self.legacy_clock(n),
            ("nonce", "") => Ok(Ref::Nonce),
            ("nonce", "hex") => Ok(Ref::NonceHex),
            ("nonce", "alnum") => Ok(Ref::NonceAlnum),
            ("nonce", _) => Err(format!(
                "unknown `{name}` (known: nonce, nonce.hex, nonce.alnum)"
            )),
            ("var", v) => self
                .vars
                .iter()
                .position(|n| n == v)
                .map(Ref::Var)
                .ok_or_else(|| {
                    format!("`{name}`: no earlier step puts a result `into: {{var: {v}}}` before this point")
                }),
            ("page", p) => match (self.paging, p) {
                (None, _) => Err(format!("`{name}` needs a `paging:` section")),
                (Some(_), "size") => Ok(Ref::PageSize),
                (Some(PagingStyle::PageNumber), "number") => Ok(Ref::PageNumber),
                (Some(PagingStyle::PageNumber), "offset") => Ok(Ref::PageOffset),
                (Some(PagingStyle::Cursor), "cursor") => Ok(Ref::PageCursor),
                (Some(style), _) => Err(format!(
                    "`{name}` is not available with paging style {}",
                    match style {
                        PagingStyle::PageNumber => {
                            "page_number (use page.number, page.offset, page.size)"
                        }
                        PagingStyle::Cursor => "cursor (use page.cursor, page.size)",
                    }
                )),
            },
            ("request", r) if self.in_step => match r {
                "method" => Ok(Ref::RequestMethod),
                "path" => Ok(Ref::RequestPath),
                "target" => Ok(Ref::RequestTarget),
                "body" => Ok(Ref::RequestBody),
                "query.sorted_namevalue" => Ok(Ref::QuerySortedNameValue),
                "query.sorted_pairs" => Ok(Ref::QuerySortedPairs),
                "query.sorted_pairs_encoded" => Ok(Ref::QuerySortedPairsEncoded),
                _ => Err(format!(
                    "unknown `{name}` (known: request.method, request.path, request.target, request.body, request.query.sorted_namevalue, request.query.sorted_pairs, request.query.sorted_pairs_encoded)"
                )),
            },
            ("request", _) => Err(format!("`{name}` is only available in signing steps")),
            ("auth", "token") if self.auth => Ok(Ref::AuthToken),
            ("auth", _) => Err(format!(
                "`{name}` needs the vendor's `auth: {{token: …}}` (and is not available in the token request itself)"
            )),
            _ => Err(format!(
                "unknown name `{name}` (namespaces: member, cred, input, now, nonce, var, page, request, auth)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::template::{Template, Values};

    fn scope() -> OpScope<'static> {
        OpScope {
            creds: Vec::new(),
            cred_values: &[],
            identity: &[],
            inputs: &["begin_at"],
            vars: Vec::new(),
            paging: None,
            in_step: false,
            maps: Vec::new(),
            auth: false,
            clock: Default::default(),
        }
    }

    /// Writes each clock entry for one fixed instant, as an attempt does.
    struct At<'a>(&'a [Rendering], jiff::Timestamp);
    impl Values for At<'_> {
        fn text(&self, r: Ref) -> Option<Cow<'_, str>> {
            match r {
                Ref::Now(i) => Some(Cow::Owned(self.0[i].write(self.1))),
                Ref::Input(0) => Some(Cow::Borrowed("2026-12-01")),
                _ => None,
            }
        }
    }

    #[test]
    fn the_clock_is_written_in_any_layout_and_zone() {
        let s = scope();
        let t = Template::compile(
            "{{now | time:yyyy-MM-dd HH:mm:ss | zone:+08:00}}|{{now|time:rfc3339|zone:UTC}}|{{now | time:yyyyMMddHHmmss | zone:America/New_York}}|{{now.ms}}|{{now.rfc3339}}|{{now.date}}|{{now.s}}",
            &s,
        )
        .unwrap();
        let clock = s.clock.into_inner();
        assert_eq!(clock.len(), 7, "one table entry per use");
        let at = jiff::Timestamp::from_millisecond(1_448_531_062_897).unwrap();
        assert_eq!(
            t.render(&At(&clock, at)).unwrap(),
            "2015-11-26 17:44:22|2015-11-26T09:44:22Z|20151126044422|1448531062897|2015-11-26T17:44:22+08:00|2015-11-26|1448531062"
        );
    }

    #[test]
    fn time_inputs_are_rewritten_and_mistakes_named() {
        let s = scope();
        let t = Template::compile("{{input.begin_at | time:epoch_ms | zone:UTC}}", &s).unwrap();
        let at = jiff::Timestamp::from_second(0).unwrap();
        // 2026-12-01 is the start of that day in UTC+08:00
        assert_eq!(t.render(&At(&[], at)).unwrap(), "1796054400000");
        let err = |src: &str| Template::compile(src, &scope()).unwrap_err();
        assert!(err("{{now.utc}}").contains("known: now.s, now.ms, now.rfc3339, now.date"));
        assert!(err("{{now}}").contains("now | time:LAYOUT"));
        assert!(err("{{now | zone:UTC}}").contains("goes with `time:"));
        assert!(err("{{now | time:julian}}").contains("unknown time layout"));
        assert!(err("{{now | time:rfc3339 | zone:Mars/Base}}").contains("bad zone"));
        assert!(err("{{input.begin_at | time:date | number}}").contains("does not combine"));
    }

    /// A scope where every namespace has something: two of each, so a lookup that took the
    /// wrong entry shows.
    fn full(in_step: bool, auth: bool) -> OpScope<'static> {
        OpScope {
            creds: vec!["app_key", "secret"],
            identity: &[IdentityKind::MemberId],
            inputs: &["begin_at", "end_at"],
            vars: vec!["sign".to_owned(), "digest".to_owned()],
            paging: Some(PagingStyle::PageNumber),
            in_step,
            maps: vec!["status", "kind"],
            auth,
            ..scope()
        }
    }

    #[test]
    fn each_name_resolves_to_its_own_entry() {
        let s = full(true, true);
        let ok = |name: &str| s.resolve(name).unwrap();
        assert_eq!(ok("member.id"), Ref::MemberId);
        assert_eq!(ok("cred.app_key"), Ref::Cred(0));
        assert_eq!(ok("cred.secret"), Ref::Cred(1));
        assert_eq!(ok("input.end_at"), Ref::Input(1));
        assert_eq!(ok("now.s"), Ref::Now(0));
        assert_eq!(ok("nonce"), Ref::Nonce);
        assert_eq!(ok("nonce.hex"), Ref::NonceHex);
        assert_eq!(ok("nonce.alnum"), Ref::NonceAlnum);
        assert_eq!(ok("var.sign"), Ref::Var(0));
        assert_eq!(ok("var.digest"), Ref::Var(1));
        assert_eq!(ok("page.number"), Ref::PageNumber);
        assert_eq!(ok("page.offset"), Ref::PageOffset);
        assert_eq!(ok("page.size"), Ref::PageSize);
        assert_eq!(ok("request.method"), Ref::RequestMethod);
        assert_eq!(ok("request.path"), Ref::RequestPath);
        assert_eq!(ok("request.target"), Ref::RequestTarget);
        assert_eq!(ok("request.body"), Ref::RequestBody);
        assert_eq!(
            ok("request.query.sorted_namevalue"),
            Ref::QuerySortedNameValue
        );
        assert_eq!(ok("request.query.sorted_pairs"), Ref::QuerySortedPairs);
        assert_eq!(
            ok("request.query.sorted_pairs_encoded"),
            Ref::QuerySortedPairsEncoded
        );
        assert_eq!(ok("auth.token"), Ref::AuthToken);
        let openid = OpScope {
            identity: &[IdentityKind::Openid],
            paging: Some(PagingStyle::Cursor),
            ..scope()
        };
        assert_eq!(openid.resolve("member.openid"), Ok(Ref::MemberOpenid));
        assert_eq!(openid.resolve("page.cursor"), Ok(Ref::PageCursor));
        assert_eq!(s.map_index("status"), Some(0));
        assert_eq!(s.map_index("kind"), Some(1));
        assert_eq!(s.map_index("channel"), None);
    }

    /// Each refusal names what is wrong where routes.yaml can fix it.
    #[test]
    fn names_not_available_here_are_refused_with_the_reason() {
        let err = |s: &OpScope, name: &str| s.resolve(name).unwrap_err();
        let s = full(false, false);
        for (name, why) in [
            ("member.openid", "does not list `openid`"),
            ("cred.token", "no credential `token` (declared: "),
            ("input.limit", "no input `limit`"),
            ("nonce.base64", "known: nonce, nonce.hex, nonce.alnum"),
            (
                "var.token",
                "no earlier step puts a result `into: {var: token}`",
            ),
            ("page.cursor", "not available with paging style page_number"),
            ("request.method", "only available in signing steps"),
            ("auth.token", "needs the vendor's `auth: {token: …}`"),
            ("auth.secret", "needs the vendor's `auth: {token: …}`"),
            ("member.name", "unknown name `member.name`"),
        ] {
            let e = err(&s, name);
            assert!(e.contains(why), "{name}: {e}");
        }
        assert!(err(&full(true, true), "request.headers").contains("known: request.method"));
        assert!(err(&full(true, true), "auth.secret").contains("`auth: {token: …}`"));
        assert!(err(&scope(), "member.id").contains("does not list `member_id`"));
        assert!(err(&scope(), "page.size").contains("needs a `paging:` section"));
    }

    /// A credential with a value is known when the request is compiled, so a key made of it is
    /// prepared once (`Key::Fixed`); an empty one is not known yet, and nothing else is fixed.
    #[test]
    fn only_credentials_with_a_value_are_fixed() {
        let values = [
            SecretString::from("k1".to_owned()),
            SecretString::from(String::new()),
        ];
        let s = OpScope {
            cred_values: &values,
            ..full(true, true)
        };
        assert_eq!(s.fixed(Ref::Cred(0)).as_deref(), Some("k1"));
        assert_eq!(s.fixed(Ref::Cred(1)), None);
        assert_eq!(s.fixed(Ref::Cred(2)), None);
        assert_eq!(s.fixed(Ref::Nonce), None);
    }
}
