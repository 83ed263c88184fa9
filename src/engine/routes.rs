//! The canonical routes the gateway serves, as one table. Each route names (in routes.yaml's
//! `routes:`) the vendor operation that serves it, and fixes the canonical schema its vendors
//! map to and the inputs their templates may use. Adding a canonical route is a row here, a
//! use case in `app`, and a line in the router.
use crate::canonical::schema::{self, FieldDef};
use crate::config::RoutesSection;

/// A canonical route; its index in [`ROUTES`] and in `Plan::routes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteId {
    /// `POST /v1/coupons/query`
    CouponsQuery,
    /// `GET /v1/packages/{vendor}/{package_id}`
    PackageGet,
    /// `POST /v1/templates`
    TemplatesCreate,
    /// `GET /v1/templates`
    TemplatesList,
    /// `PUT /v1/templates/{vendor}/{id}`
    TemplatesUpdate,
}

/// What the compiler needs to know of a route.
pub struct RouteKind {
    pub id: RouteId,
    /// Its key under `routes:` in routes.yaml.
    pub key: &'static str,
    pub schema: &'static [FieldDef],
    pub inputs: &'static [&'static str],
    /// The route asks about a member, so its operations say which identities they accept.
    pub member: bool,
    /// The route changes data at the vendor: its operations must say `effect: write`, so
    /// that nothing ever retries or caches them.
    pub write: bool,
}

/// Every canonical route, in `RouteId` order.
pub static ROUTES: [RouteKind; 5] = [
    RouteKind {
        id: RouteId::CouponsQuery,
        key: "coupons_query",
        schema: schema::COUPON,
        inputs: &[],
        member: true,
        write: false,
    },
    RouteKind {
        id: RouteId::PackageGet,
        key: "package_get",
        schema: schema::PACKAGE,
        inputs: &["package_id"],
        member: false,
        write: false,
    },
    RouteKind {
        id: RouteId::TemplatesCreate,
        key: "templates_create",
        schema: schema::TEMPLATE,
        inputs: &["kind", "begin_at", "end_at", "sync", "card"],
        member: false,
        write: true,
    },
    RouteKind {
        id: RouteId::TemplatesList,
        key: "templates_list",
        schema: schema::TEMPLATE,
        inputs: &["kind", "active_on", "page", "per_page"],
        member: false,
        write: false,
    },
    RouteKind {
        id: RouteId::TemplatesUpdate,
        key: "templates_update",
        schema: schema::TEMPLATE,
        inputs: &["id", "kind", "begin_at", "end_at", "sync", "card"],
        member: false,
        write: true,
    },
];

impl RouteId {
    pub fn kind(self) -> &'static RouteKind {
        &ROUTES[self as usize]
    }

    /// The vendor operation routes.yaml assigns to this route.
    pub fn operation(self, routes: &RoutesSection) -> &str {
        match self {
            RouteId::CouponsQuery => &routes.coupons_query.operation,
            RouteId::PackageGet => &routes.package_get.operation,
            RouteId::TemplatesCreate => &routes.templates_create.operation,
            RouteId::TemplatesList => &routes.templates_list.operation,
            RouteId::TemplatesUpdate => &routes.templates_update.operation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_id_order() {
        for (i, r) in ROUTES.iter().enumerate() {
            assert_eq!(r.id as usize, i, "{}", r.key);
            assert!(std::ptr::eq(r.id.kind(), r));
        }
    }
}
