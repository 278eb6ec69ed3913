//! Schema definitions (RFC 7643 §4, §7, §8.7) and the discovery documents.
//!
//! The same definitions drive validation, filtering (`caseExact`, types), PATCH (mutability)
//! and projection (`returned`), and are served at `/Schemas`, so what we advertise is exactly
//! what we enforce.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

/// Core User schema URN.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// Core Group schema URN.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// Enterprise User extension URN.
pub const ENTERPRISE_USER_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// idbridge's custom-attributes extension: the SCIM push forwarder of another idbridge sends
/// custom attributes that have no standard SCIM field here, by their WorkOS names; a
/// directory's attribute map reads them as `<URN>.<name>`. Any attribute name is accepted and
/// its value kept as sent (see [`Schema::open`]).
pub const CUSTOM_ATTRIBUTES_SCHEMA: &str =
    "urn:idbridge:params:scim:schemas:extension:custom_attributes:2.0:User";
/// PATCH request message URN.
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// ListResponse message URN.
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// Schema of the `/Schemas` documents.
pub const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
/// Schema of the `/ResourceTypes` documents.
pub const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
/// Schema of the `/ServiceProviderConfig` document.
pub const SERVICE_PROVIDER_CONFIG_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";

/// Vendor schema URNs that real IdPs put in `schemas` without sending any attribute of them.
/// Entra ID's documented group create carries the first one; rejecting it would break Entra
/// group provisioning, so these are accepted and dropped.
pub const TOLERATED_SCHEMAS: &[&str] =
    &["http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"];

/// The most results one list page returns (advertised as `filter.maxResults`).
pub const DEFAULT_MAX_RESULTS: usize = 200;

/// RFC 7643 §2.3 attribute data types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    /// A Unicode string.
    String,
    /// `true` / `false`.
    Boolean,
    /// A number with a fractional part allowed.
    Decimal,
    /// A whole number.
    Integer,
    /// An `xsd:dateTime` (RFC 3339) string; compared as an instant.
    DateTime,
    /// Base64 data.
    Binary,
    /// A URI string.
    Reference,
    /// An object of sub-attributes.
    Complex,
}

impl AttrType {
    fn as_str(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Boolean => "boolean",
            AttrType::Decimal => "decimal",
            AttrType::Integer => "integer",
            AttrType::DateTime => "dateTime",
            AttrType::Binary => "binary",
            AttrType::Reference => "reference",
            AttrType::Complex => "complex",
        }
    }
}

/// RFC 7643 §7 `mutability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    /// Set by the server only; client values are ignored on input and rejected in PATCH.
    ReadOnly,
    /// Freely writable.
    ReadWrite,
    /// Writable only while unset.
    Immutable,
    /// Accepted on input, never returned.
    WriteOnly,
}

impl Mutability {
    fn as_str(self) -> &'static str {
        match self {
            Mutability::ReadOnly => "readOnly",
            Mutability::ReadWrite => "readWrite",
            Mutability::Immutable => "immutable",
            Mutability::WriteOnly => "writeOnly",
        }
    }
}

/// RFC 7643 §7 `returned`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    /// Returned whatever `attributes`/`excludedAttributes` say.
    Always,
    /// Never returned (passwords).
    Never,
    /// Returned unless excluded.
    Default,
    /// Returned only when asked for in `attributes`.
    Request,
}

impl Returned {
    fn as_str(self) -> &'static str {
        match self {
            Returned::Always => "always",
            Returned::Never => "never",
            Returned::Default => "default",
            Returned::Request => "request",
        }
    }
}

/// RFC 7643 §7 `uniqueness`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uniqueness {
    /// No constraint.
    None,
    /// Unique within the directory (enforced by the store).
    Server,
    /// Globally unique.
    Global,
}

impl Uniqueness {
    fn as_str(self) -> &'static str {
        match self {
            Uniqueness::None => "none",
            Uniqueness::Server => "server",
            Uniqueness::Global => "global",
        }
    }
}

/// One attribute definition.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeDef {
    /// Canonical spelling; lookups are case-insensitive.
    pub name: String,
    /// Data type.
    pub ty: AttrType,
    /// Whether the value is an array.
    pub multi_valued: bool,
    /// Description served at `/Schemas`.
    pub description: String,
    /// Whether a create/replace must carry it.
    pub required: bool,
    /// Whether string comparisons respect case (filters, uniqueness).
    pub case_exact: bool,
    /// Who may write it.
    pub mutability: Mutability,
    /// When it is returned.
    pub returned: Returned,
    /// Uniqueness constraint.
    pub uniqueness: Uniqueness,
    /// Sub-attributes of a complex attribute.
    pub sub_attributes: Vec<AttributeDef>,
    /// Suggested values (e.g. `work`, `home`).
    pub canonical_values: Vec<String>,
    /// For references: what they point at.
    pub reference_types: Vec<String>,
}

impl AttributeDef {
    fn new(name: &str, ty: AttrType, description: &str) -> Self {
        Self {
            name: name.into(),
            ty,
            multi_valued: false,
            description: description.into(),
            required: false,
            case_exact: false,
            mutability: Mutability::ReadWrite,
            returned: Returned::Default,
            uniqueness: Uniqueness::None,
            sub_attributes: Vec::new(),
            canonical_values: Vec::new(),
            reference_types: Vec::new(),
        }
    }
    fn multi(mut self) -> Self {
        self.multi_valued = true;
        self
    }
    fn required(mut self) -> Self {
        self.required = true;
        self
    }
    fn case_exact(mut self) -> Self {
        self.case_exact = true;
        self
    }
    fn mutability(mut self, m: Mutability) -> Self {
        self.mutability = m;
        self
    }
    fn returned(mut self, r: Returned) -> Self {
        self.returned = r;
        self
    }
    fn unique(mut self) -> Self {
        self.uniqueness = Uniqueness::Server;
        self
    }
    fn subs(mut self, subs: Vec<AttributeDef>) -> Self {
        self.sub_attributes = subs;
        self
    }
    fn canonical(mut self, values: &[&str]) -> Self {
        self.canonical_values = values.iter().map(|v| (*v).to_string()).collect();
        self
    }
    fn refs(mut self, types: &[&str]) -> Self {
        self.reference_types = types.iter().map(|v| (*v).to_string()).collect();
        self
    }

    /// Finds a sub-attribute by case-insensitive name.
    pub fn sub_attribute(&self, name: &str) -> Option<&AttributeDef> {
        self.sub_attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// The RFC 7643 §7 representation served at `/Schemas`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("type".into(), json!(self.ty.as_str()));
        m.insert("multiValued".into(), json!(self.multi_valued));
        m.insert("description".into(), json!(self.description));
        m.insert("required".into(), json!(self.required));
        if !self.sub_attributes.is_empty() {
            m.insert(
                "subAttributes".into(),
                Value::Array(self.sub_attributes.iter().map(Self::to_json).collect()),
            );
        }
        if !self.canonical_values.is_empty() {
            m.insert("canonicalValues".into(), json!(self.canonical_values));
        }
        if self.ty != AttrType::Complex {
            m.insert("caseExact".into(), json!(self.case_exact));
        }
        m.insert("mutability".into(), json!(self.mutability.as_str()));
        m.insert("returned".into(), json!(self.returned.as_str()));
        if self.ty != AttrType::Complex {
            m.insert("uniqueness".into(), json!(self.uniqueness.as_str()));
        }
        if !self.reference_types.is_empty() {
            m.insert("referenceTypes".into(), json!(self.reference_types));
        }
        Value::Object(m)
    }
}

/// A schema: a URN and its attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    /// The schema URN.
    pub id: String,
    /// Short name (`User`).
    pub name: String,
    /// Description.
    pub description: String,
    /// Top-level attributes.
    pub attributes: Vec<AttributeDef>,
    /// Accepts attributes it does not define, keeping their values as sent (idbridge's
    /// custom-attributes extension); `false` for every RFC schema, which drop unknown names.
    pub open: bool,
}

impl Schema {
    /// Finds a top-level attribute by case-insensitive name.
    pub fn attribute(&self, name: &str) -> Option<&AttributeDef> {
        self.attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// The `/Schemas/<id>` document; `base_url` is the directory's SCIM base (no trailing `/`).
    pub fn to_json(&self, base_url: &str) -> Value {
        json!({
            "schemas": [SCHEMA_SCHEMA],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": self.attributes.iter().map(AttributeDef::to_json).collect::<Vec<_>>(),
            "meta": {
                "resourceType": "Schema",
                "location": format!("{}/Schemas/{}", trim_base(base_url), self.id),
            },
        })
    }
}

/// A resource type: its core schema, its extensions, and the common attributes every resource
/// has (`id`, `externalId`, `meta`, RFC 7643 §3.1), which are not part of any served schema.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceSchema {
    /// `User` or `Group`.
    pub name: String,
    /// Endpoint relative to the base URL (`/Users`).
    pub endpoint: String,
    /// The core schema.
    pub core: Schema,
    /// Extensions with whether they are required.
    pub extensions: Vec<(Schema, bool)>,
    /// `id`, `externalId`, `meta`.
    pub common: Vec<AttributeDef>,
}

impl ResourceSchema {
    /// The User resource type with the enterprise extension.
    pub fn user() -> &'static ResourceSchema {
        static USER: OnceLock<ResourceSchema> = OnceLock::new();
        USER.get_or_init(|| ResourceSchema {
            name: "User".into(),
            endpoint: "/Users".into(),
            core: user_schema(),
            extensions: vec![
                (enterprise_user_schema(), false),
                (custom_attributes_schema(), false),
            ],
            common: common_attributes(),
        })
    }

    /// The Group resource type.
    pub fn group() -> &'static ResourceSchema {
        static GROUP: OnceLock<ResourceSchema> = OnceLock::new();
        GROUP.get_or_init(|| ResourceSchema {
            name: "Group".into(),
            endpoint: "/Groups".into(),
            core: group_schema(),
            extensions: Vec::new(),
            common: common_attributes(),
        })
    }

    /// Extensions served at `/Schemas` and `/ResourceTypes`: all but the open one, which has
    /// no attributes to describe and nothing a generic SCIM client would send (accepted on
    /// input only).
    pub fn advertised_extensions(&self) -> impl Iterator<Item = &(Schema, bool)> {
        self.extensions.iter().filter(|(s, _)| !s.open)
    }

    /// The extension schema with this URN (case-insensitive), if any.
    pub fn extension(&self, urn: &str) -> Option<&Schema> {
        self.extensions
            .iter()
            .map(|(s, _)| s)
            .find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    /// Whether `urn` names the core schema.
    pub fn is_core(&self, urn: &str) -> bool {
        self.core.id.eq_ignore_ascii_case(urn)
    }

    /// Resolves a top-level attribute in the core schema or the common attributes.
    pub fn core_attribute(&self, name: &str) -> Option<&AttributeDef> {
        self.common
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
            .or_else(|| self.core.attribute(name))
    }

    /// Resolves `(urn, name)` where `urn` is `None` or the core URN for core attributes.
    pub fn attribute(&self, urn: Option<&str>, name: &str) -> Option<&AttributeDef> {
        match urn {
            None => self.core_attribute(name),
            Some(u) if self.is_core(u) => self.core_attribute(name),
            Some(u) => self.extension(u).and_then(|s| s.attribute(name)),
        }
    }

    /// Every schema URN this resource type accepts in `schemas`.
    pub fn schema_ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.core.id.as_str())
            .chain(self.extensions.iter().map(|(s, _)| s.id.as_str()))
    }

    /// The `/ResourceTypes/<name>` document.
    pub fn resource_type_json(&self, base_url: &str) -> Value {
        json!({
            "schemas": [RESOURCE_TYPE_SCHEMA],
            "id": self.name,
            "name": self.name,
            "endpoint": self.endpoint,
            "description": format!("{} resources", self.name),
            "schema": self.core.id,
            "schemaExtensions": self.advertised_extensions().map(|(s, required)| json!({
                "schema": s.id,
                "required": required,
            })).collect::<Vec<_>>(),
            "meta": {
                "resourceType": "ResourceType",
                "location": format!("{}/ResourceTypes/{}", trim_base(base_url), self.name),
            },
        })
    }
}

fn trim_base(base_url: &str) -> &str {
    base_url.trim_end_matches('/')
}

/// All schemas served at `/Schemas`: User, Group, EnterpriseUser.
pub fn all_schemas() -> Vec<&'static Schema> {
    let user = ResourceSchema::user();
    let group = ResourceSchema::group();
    let mut out = vec![&user.core, &group.core];
    out.extend(user.advertised_extensions().map(|(s, _)| s));
    out
}

/// The `/Schemas` documents, one per schema.
pub fn schemas_json(base_url: &str) -> Vec<Value> {
    all_schemas().iter().map(|s| s.to_json(base_url)).collect()
}

/// The `/ResourceTypes` documents.
pub fn resource_types_json(base_url: &str) -> Vec<Value> {
    [ResourceSchema::user(), ResourceSchema::group()]
        .iter()
        .map(|r| r.resource_type_json(base_url))
        .collect()
}

/// The `/ServiceProviderConfig` document (RFC 7643 §5): PATCH, filter and ETags supported;
/// bulk, sort and password change not; bearer tokens for authentication.
pub fn service_provider_config_json(base_url: &str, max_results: usize) -> Value {
    json!({
        "schemas": [SERVICE_PROVIDER_CONFIG_SCHEMA],
        "documentationUri": "https://example.invalid/idbridge/docs/scim",
        "patch": { "supported": true },
        "bulk": { "supported": false, "maxOperations": 0, "maxPayloadSize": 0 },
        "filter": { "supported": true, "maxResults": max_results },
        "changePassword": { "supported": false },
        "sort": { "supported": false },
        "etag": { "supported": true },
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication with the directory's bearer token",
            "specUri": "https://www.rfc-editor.org/info/rfc6750",
            "primary": true,
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{}/ServiceProviderConfig", trim_base(base_url)),
        },
    })
}

use AttrType as T;
use Mutability as M;

fn s(name: &str, description: &str) -> AttributeDef {
    AttributeDef::new(name, T::String, description)
}

fn typed_value_subs(value_ty: AttrType, types: &[&str]) -> Vec<AttributeDef> {
    vec![
        AttributeDef::new("value", value_ty, "The value"),
        s(
            "display",
            "A human-readable name, primarily used for display purposes",
        ),
        s("type", "A label indicating the attribute's function").canonical(types),
        AttributeDef::new("primary", T::Boolean, "Whether this is the primary value"),
    ]
}

fn common_attributes() -> Vec<AttributeDef> {
    vec![
        s("id", "Unique identifier assigned by the service provider")
            .case_exact()
            .mutability(M::ReadOnly)
            .returned(Returned::Always)
            .unique(),
        s(
            "externalId",
            "Identifier assigned by the provisioning client",
        )
        .case_exact(),
        // Returned always so clients can read `meta.version` whatever they project.
        AttributeDef::new("meta", T::Complex, "Resource metadata")
            .mutability(M::ReadOnly)
            .returned(Returned::Always)
            .subs(vec![
                s("resourceType", "The resource type name")
                    .case_exact()
                    .mutability(M::ReadOnly),
                AttributeDef::new("created", T::DateTime, "When the resource was added")
                    .mutability(M::ReadOnly),
                AttributeDef::new(
                    "lastModified",
                    T::DateTime,
                    "When the resource last changed",
                )
                .mutability(M::ReadOnly),
                AttributeDef::new("location", T::Reference, "The resource URI")
                    .case_exact()
                    .mutability(M::ReadOnly),
                s("version", "The resource version (ETag)")
                    .case_exact()
                    .mutability(M::ReadOnly),
            ]),
    ]
}

fn user_schema() -> Schema {
    Schema {
        open: false,
        id: USER_SCHEMA.into(),
        name: "User".into(),
        description: "User Account".into(),
        attributes: vec![
            s(
                "userName",
                "Unique identifier for the User, used to sign in",
            )
            .required()
            .unique(),
            AttributeDef::new("name", T::Complex, "The components of the user's real name").subs(
                vec![
                    s("formatted", "The full name"),
                    s("familyName", "The family name"),
                    s("givenName", "The given name"),
                    s("middleName", "The middle name(s)"),
                    s("honorificPrefix", "The honorific prefix(es)"),
                    s("honorificSuffix", "The honorific suffix(es)"),
                ],
            ),
            s("displayName", "The name of the User, suitable for display"),
            s("nickName", "The casual way to address the user"),
            AttributeDef::new(
                "profileUrl",
                T::Reference,
                "A URI of the User's online profile",
            )
            .refs(&["external"]),
            s("title", "The user's title"),
            s(
                "userType",
                "The relationship between the organization and the user",
            ),
            s(
                "preferredLanguage",
                "The User's preferred written or spoken language",
            ),
            s("locale", "The User's default location"),
            s("timezone", "The User's time zone in IANA format"),
            AttributeDef::new("active", T::Boolean, "The User's administrative status"),
            s(
                "password",
                "The User's cleartext password; never stored or returned by idbridge",
            )
            .mutability(M::WriteOnly)
            .returned(Returned::Never),
            AttributeDef::new("emails", T::Complex, "Email addresses for the user")
                .multi()
                .subs(typed_value_subs(T::String, &["work", "home", "other"])),
            AttributeDef::new("phoneNumbers", T::Complex, "Phone numbers for the User")
                .multi()
                .subs(typed_value_subs(
                    T::String,
                    &["work", "home", "mobile", "fax", "pager", "other"],
                )),
            AttributeDef::new(
                "ims",
                T::Complex,
                "Instant messaging addresses for the User",
            )
            .multi()
            .subs(typed_value_subs(
                T::String,
                &["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"],
            )),
            AttributeDef::new("photos", T::Complex, "URLs of photos of the User")
                .multi()
                .subs(typed_value_subs(T::Reference, &["photo", "thumbnail"])),
            AttributeDef::new(
                "addresses",
                T::Complex,
                "A physical mailing address for this User",
            )
            .multi()
            .subs(vec![
                s("formatted", "The full mailing address"),
                s("streetAddress", "The full street address component"),
                s("locality", "The city or locality component"),
                s("region", "The state or region component"),
                s("postalCode", "The zip code or postal code component"),
                s("country", "The country name component"),
                s("type", "A label indicating the attribute's function")
                    .canonical(&["work", "home", "other"]),
                AttributeDef::new("primary", T::Boolean, "Whether this is the primary address"),
            ]),
            AttributeDef::new(
                "groups",
                T::Complex,
                "Groups the user belongs to, maintained by the server",
            )
            .multi()
            .mutability(M::ReadOnly)
            .subs(vec![
                s("value", "The identifier of the User's group").mutability(M::ReadOnly),
                AttributeDef::new("$ref", T::Reference, "The URI of the group")
                    .mutability(M::ReadOnly)
                    .refs(&["User", "Group"]),
                s("display", "The group's display name").mutability(M::ReadOnly),
                s("type", "direct or indirect membership")
                    .mutability(M::ReadOnly)
                    .canonical(&["direct", "indirect"]),
            ]),
            AttributeDef::new(
                "entitlements",
                T::Complex,
                "A list of entitlements for the User",
            )
            .multi()
            .subs(typed_value_subs(T::String, &[])),
            AttributeDef::new("roles", T::Complex, "A list of roles for the User")
                .multi()
                .subs(typed_value_subs(T::String, &[])),
            AttributeDef::new(
                "x509Certificates",
                T::Complex,
                "A list of certificates issued to the User",
            )
            .multi()
            .subs(typed_value_subs(T::Binary, &[])),
        ],
    }
}

fn group_schema() -> Schema {
    Schema {
        open: false,
        id: GROUP_SCHEMA.into(),
        name: "Group".into(),
        description: "Group".into(),
        attributes: vec![
            s("displayName", "A human-readable name for the Group").required(),
            AttributeDef::new("members", T::Complex, "A list of members of the Group")
                .multi()
                .subs(vec![
                    s("value", "Identifier of the member")
                        .case_exact()
                        .mutability(M::Immutable),
                    AttributeDef::new("$ref", T::Reference, "The URI of the member")
                        .mutability(M::Immutable)
                        .refs(&["User", "Group"]),
                    s("display", "The member's display name").mutability(M::Immutable),
                    s("type", "The type of member")
                        .mutability(M::Immutable)
                        .canonical(&["User", "Group"]),
                ]),
        ],
    }
}

fn enterprise_user_schema() -> Schema {
    Schema {
        open: false,
        id: ENTERPRISE_USER_SCHEMA.into(),
        name: "EnterpriseUser".into(),
        description: "Enterprise User".into(),
        attributes: vec![
            s(
                "employeeNumber",
                "Numeric or alphanumeric identifier assigned to a person",
            ),
            s("costCenter", "Identifies the name of a cost center"),
            s("organization", "Identifies the name of an organization"),
            s("division", "Identifies the name of a division"),
            s("department", "Identifies the name of a department"),
            AttributeDef::new("manager", T::Complex, "The User's manager").subs(vec![
                s(
                    "value",
                    "The id of the SCIM resource representing the User's manager",
                ),
                AttributeDef::new("$ref", T::Reference, "The URI of the manager").refs(&["User"]),
                s("displayName", "The displayName of the User's manager").mutability(M::ReadOnly),
            ]),
        ],
    }
}

fn custom_attributes_schema() -> Schema {
    Schema {
        id: CUSTOM_ATTRIBUTES_SCHEMA.into(),
        name: "CustomAttributes".into(),
        description: "idbridge custom attributes by their WorkOS names (any name, any JSON \
                      value), as another idbridge's SCIM push sends them"
            .into(),
        attributes: Vec::new(),
        open: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_schema_flags_follow_rfc7643() {
        let user = ResourceSchema::user();
        let user_name = user
            .attribute(None, "USERNAME")
            .map(|a| (a.required, a.case_exact, a.uniqueness));
        assert_eq!(user_name, Some((true, false, Uniqueness::Server)));
        let id = user
            .attribute(None, "id")
            .map(|a| (a.case_exact, a.mutability, a.returned));
        assert_eq!(id, Some((true, M::ReadOnly, Returned::Always)));
        assert!(user
            .attribute(None, "externalId")
            .is_some_and(|a| a.case_exact));
        let email_value = user
            .attribute(None, "emails")
            .and_then(|a| a.sub_attribute("VALUE"));
        assert!(email_value.is_some_and(|v| !v.case_exact));
        assert!(user
            .attribute(None, "password")
            .is_some_and(|a| a.returned == Returned::Never));
        assert!(user
            .attribute(Some(ENTERPRISE_USER_SCHEMA), "department")
            .is_some());
        assert!(user.attribute(Some(USER_SCHEMA), "userName").is_some());
        assert!(user
            .attribute(Some("urn:example:unknown"), "department")
            .is_none());
        assert!(user.attribute(None, "department").is_none());
    }

    #[test]
    fn schema_documents_have_locations_and_attributes() {
        let docs = schemas_json("https://h/scim/v2/d1/");
        // The open custom-attributes extension is accepted but not advertised.
        assert_eq!(docs.len(), 3);
        let ids: Vec<_> = docs.iter().filter_map(|d| d["id"].as_str()).collect();
        assert_eq!(ids, vec![USER_SCHEMA, GROUP_SCHEMA, ENTERPRISE_USER_SCHEMA]);
        for d in &docs {
            let loc = d["meta"]["location"].as_str().unwrap_or_default();
            assert_eq!(
                loc,
                format!(
                    "https://h/scim/v2/d1/Schemas/{}",
                    d["id"].as_str().unwrap_or_default()
                )
            );
            assert!(d["attributes"].as_array().is_some_and(|a| !a.is_empty()));
        }
        assert!(ResourceSchema::user()
            .schema_ids()
            .any(|id| id == CUSTOM_ATTRIBUTES_SCHEMA));
        let rts = resource_types_json("http://x");
        assert_eq!(rts[0]["schemaExtensions"].as_array().map(Vec::len), Some(1));
        let user_name = &docs[0]["attributes"][0];
        assert_eq!(user_name["name"], "userName");
        assert_eq!(user_name["uniqueness"], "server");
        assert_eq!(user_name["required"], true);
    }

    #[test]
    fn resource_types_and_spc() {
        let rts = resource_types_json("http://x");
        assert_eq!(rts[0]["endpoint"], "/Users");
        assert_eq!(
            rts[0]["schemaExtensions"][0]["schema"],
            ENTERPRISE_USER_SCHEMA
        );
        assert_eq!(rts[1]["meta"]["location"], "http://x/ResourceTypes/Group");
        let spc = service_provider_config_json("http://x", 50);
        assert_eq!(spc["filter"]["maxResults"], 50);
        assert_eq!(spc["bulk"]["supported"], false);
        assert_eq!(spc["etag"]["supported"], true);
        assert_eq!(spc["authenticationSchemes"][0]["type"], "oauthbearertoken");
    }
}
