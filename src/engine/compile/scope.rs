//! What names mean while one request is compiled: `member.*`, `cred.*`, `input.*`, `now.*`,
//! `nonce`, `var.*`, `page.*`, `request.*` and `auth.token`, each resolved to a [`Ref`] or
//! refused with the reason.
use std::borrow::Cow;

use secrecy::{ExposeSecret, SecretString};

use super::list;
use crate::config::{IdentityKind, PagingStyle};
use crate::engine::template::{Ref, Scope};

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
            ("now", "s") => Ok(Ref::NowS),
            ("now", "ms") => Ok(Ref::NowMs),
            ("now", "rfc3339") => Ok(Ref::NowRfc3339),
            ("now", "date") => Ok(Ref::NowDate),
            ("nonce", "") => Ok(Ref::Nonce),
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
                (Some(PagingStyle::Cursor), "cursor") => Ok(Ref::PageCursor),
                (Some(style), _) => Err(format!(
                    "`{name}` is not available with paging style {}",
                    match style {
                        PagingStyle::PageNumber => "page_number (use page.number, page.size)",
                        PagingStyle::Cursor => "cursor (use page.cursor, page.size)",
                    }
                )),
            },
            ("request", r) if self.in_step => match r {
                "method" => Ok(Ref::RequestMethod),
                "path" => Ok(Ref::RequestPath),
                "body" => Ok(Ref::RequestBody),
                "query.sorted_namevalue" => Ok(Ref::QuerySortedNameValue),
                "query.sorted_pairs" => Ok(Ref::QuerySortedPairs),
                "query.sorted_pairs_encoded" => Ok(Ref::QuerySortedPairsEncoded),
                _ => Err(format!(
                    "unknown `{name}` (known: request.method, request.path, request.body, request.query.sorted_namevalue, request.query.sorted_pairs, request.query.sorted_pairs_encoded)"
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
