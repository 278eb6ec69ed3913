//! The RFC 7644 §3.4.2.2 filter language: parser, AST, printer and evaluator.
//!
//! The parser follows the ABNF of RFC 7644 figure 1 (attribute paths with an optional schema
//! URN prefix and sub-attribute, the ten comparison operators case-insensitively, `and` binding
//! tighter than `or`, `not (...)`, grouping parentheses, value paths such as
//! `emails[type eq "work" and primary eq true]`, and JSON literals). Input length, nesting depth
//! and expression count are capped so a hostile filter cannot exhaust the stack or the CPU.
//!
//! The same lexer and attribute-path grammar parse PATCH paths ([`parse_path`]).

use std::cmp::Ordering;
use std::fmt;

use serde_json::{Number, Value};

use crate::error::ScimError;
use crate::schema::{AttrType, AttributeDef, ResourceSchema, GROUP_SCHEMA, USER_SCHEMA};

/// Longest filter or path accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 4096;
/// Deepest nesting of parentheses, `not` and value paths.
pub const MAX_FILTER_DEPTH: usize = 16;
/// Most attribute expressions (comparisons and `pr`) in one filter; this also bounds the depth
/// of `and`/`or` chains, which the recursive evaluator walks.
pub const MAX_FILTER_EXPRESSIONS: usize = 64;

/// Why a filter or path did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Longer than [`MAX_FILTER_LEN`].
    #[error("filter is longer than {max} bytes")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// Nested deeper than [`MAX_FILTER_DEPTH`].
    #[error("filter nests deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_FILTER_EXPRESSIONS`] expressions.
    #[error("filter has more than {max} expressions")]
    TooComplex {
        /// The limit.
        max: usize,
    },
    /// A string literal without its closing quote.
    #[error("unterminated string starting at byte {0}")]
    UnterminatedString(usize),
    /// A string literal that is not valid JSON.
    #[error("invalid string literal starting at byte {0}")]
    BadString(usize),
    /// The input stopped where more was expected.
    #[error("unexpected end of filter")]
    UnexpectedEnd,
    /// A token that does not fit the grammar here.
    #[error("unexpected {0}")]
    Unexpected(String),
    /// An attribute path that is not `[URN ":"] ATTRNAME ["." ATTRNAME]`.
    #[error("invalid attribute path {0}")]
    BadAttrPath(String),
    /// A word where an operator was expected.
    #[error("unknown operator {0}")]
    UnknownOperator(String),
    /// A comparison value that is not a JSON string, number, true, false or null.
    #[error("invalid comparison value {0}")]
    BadValue(String),
    /// An empty filter.
    #[error("empty filter")]
    Empty,
}

impl From<FilterError> for ScimError {
    fn from(e: FilterError) -> Self {
        ScimError::invalid_filter(e.to_string())
    }
}

/// Quotes a fragment of client input for an error message, truncated so errors stay small.
fn quoted(s: &str) -> String {
    let short: String = s.chars().take(40).collect();
    if short.len() < s.len() {
        format!("{short:?}...")
    } else {
        format!("{short:?}")
    }
}

/// `[URN ":"] name ["." sub]`. Names keep the client's spelling; matching is case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    /// Schema URN prefix, e.g. the enterprise extension.
    pub urn: Option<String>,
    /// Attribute name.
    pub name: String,
    /// Sub-attribute name.
    pub sub: Option<String>,
}

impl AttrPath {
    /// A path without URN or sub-attribute.
    pub fn simple(name: &str) -> Self {
        Self {
            urn: None,
            name: name.into(),
            sub: None,
        }
    }

    /// Parses one attribute path word (no brackets).
    pub fn parse(word: &str) -> Result<Self, FilterError> {
        let bad = || FilterError::BadAttrPath(quoted(word));
        let (urn, rest) = if word
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
        {
            let (u, r) = word.rsplit_once(':').ok_or_else(bad)?;
            (Some(u.to_string()), r)
        } else {
            (None, word)
        };
        let (name, sub) = match rest.split_once('.') {
            Some((n, s)) => (n, Some(s)),
            None => (rest, None),
        };
        if !is_attr_name(name) || sub.is_some_and(|s| !is_attr_name(s)) {
            return Err(bad());
        }
        Ok(Self {
            urn,
            name: name.into(),
            sub: sub.map(str::to_string),
        })
    }

    /// Whether this path names `name` (case-insensitive) with no sub-attribute, either bare or
    /// prefixed with one of the core schema URNs.
    pub fn is_core_simple(&self, name: &str) -> bool {
        self.sub.is_none()
            && self.name.eq_ignore_ascii_case(name)
            && self.urn.as_deref().is_none_or(|u| {
                u.eq_ignore_ascii_case(USER_SCHEMA) || u.eq_ignore_ascii_case(GROUP_SCHEMA)
            })
    }
}

/// RFC 7643 ATTRNAME (`ALPHA *(ALPHA / DIGIT / "-" / "_")`), plus `$ref`, which the RFC's own
/// schemas use as a sub-attribute name.
fn is_attr_name(s: &str) -> bool {
    if s.eq_ignore_ascii_case("$ref") {
        return true;
    }
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        }
        _ => false,
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(u) = &self.urn {
            write!(f, "{u}:")?;
        }
        f.write_str(&self.name)?;
        if let Some(s) = &self.sub {
            write!(f, ".{s}")?;
        }
        Ok(())
    }
}

/// The comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// equal
    Eq,
    /// not equal
    Ne,
    /// contains
    Co,
    /// starts with
    Sw,
    /// ends with
    Ew,
    /// greater than
    Gt,
    /// greater than or equal
    Ge,
    /// less than
    Lt,
    /// less than or equal
    Le,
}

impl CompareOp {
    fn parse(word: &str) -> Option<Self> {
        Some(match word.to_ascii_lowercase().as_str() {
            "eq" => Self::Eq,
            "ne" => Self::Ne,
            "co" => Self::Co,
            "sw" => Self::Sw,
            "ew" => Self::Ew,
            "gt" => Self::Gt,
            "ge" => Self::Ge,
            "lt" => Self::Lt,
            "le" => Self::Le,
            _ => return None,
        })
    }

    /// The operator's lowercase spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::Ne => "ne",
            Self::Co => "co",
            Self::Sw => "sw",
            Self::Ew => "ew",
            Self::Gt => "gt",
            Self::Ge => "ge",
            Self::Lt => "lt",
            Self::Le => "le",
        }
    }

    fn is_ordering(self) -> bool {
        matches!(self, Self::Gt | Self::Ge | Self::Lt | Self::Le)
    }
}

/// A comparison value.
#[derive(Debug, Clone, PartialEq)]
pub enum CompValue {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A JSON number.
    Number(Number),
    /// A JSON string (escapes decoded).
    String(String),
}

impl fmt::Display for CompValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompValue::Null => f.write_str("null"),
            CompValue::Bool(b) => write!(f, "{b}"),
            CompValue::Number(n) => write!(f, "{n}"),
            // Value's Display is JSON, so escapes round-trip through the parser.
            CompValue::String(s) => write!(f, "{}", Value::String(s.clone())),
        }
    }
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `attr pr`
    Present(AttrPath),
    /// `attr op value`
    Compare(AttrPath, CompareOp, CompValue),
    /// `a and b`
    And(Box<Filter>, Box<Filter>),
    /// `a or b`
    Or(Box<Filter>, Box<Filter>),
    /// `not (a)`
    Not(Box<Filter>),
    /// `attr[filter]`: some value of the multi-valued `attr` matches the inner filter.
    ValuePath(AttrPath, Box<Filter>),
}

impl Filter {
    /// Binding strength for printing: `or` < `and` < everything else.
    fn precedence(&self) -> u8 {
        match self {
            Filter::Or(..) => 1,
            Filter::And(..) => 2,
            _ => 3,
        }
    }

    /// Prints `self`, parenthesized when it binds more loosely than `min` requires.
    fn fmt_min(&self, f: &mut fmt::Formatter<'_>, min: u8) -> fmt::Result {
        if self.precedence() < min {
            f.write_str("(")?;
            self.fmt_min(f, 0)?;
            return f.write_str(")");
        }
        match self {
            Filter::Present(p) => write!(f, "{p} pr"),
            Filter::Compare(p, op, v) => write!(f, "{p} {} {v}", op.as_str()),
            // Both operators associate to the left, so only a right operand of the same
            // precedence needs parentheses.
            Filter::Or(a, b) => {
                a.fmt_min(f, 1)?;
                f.write_str(" or ")?;
                b.fmt_min(f, 2)
            }
            Filter::And(a, b) => {
                a.fmt_min(f, 2)?;
                f.write_str(" and ")?;
                b.fmt_min(f, 3)
            }
            Filter::Not(a) => {
                f.write_str("not (")?;
                a.fmt_min(f, 0)?;
                f.write_str(")")
            }
            Filter::ValuePath(p, inner) => {
                write!(f, "{p}[")?;
                inner.fmt_min(f, 0)?;
                f.write_str("]")
            }
        }
    }
}

impl fmt::Display for Filter {
    /// Prints a canonical form with the fewest parentheses that parses back to the same AST.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_min(f, 0)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Str(String),
    Word(String),
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::LBracket => "'['".into(),
            Tok::RBracket => "']'".into(),
            Tok::Str(s) => format!("string {}", quoted(s)),
            Tok::Word(w) => quoted(w),
        }
    }
}

fn lex(input: &str) -> Result<Vec<Tok>, FilterError> {
    if input.len() > MAX_FILTER_LEN {
        return Err(FilterError::TooLong {
            max: MAX_FILTER_LEN,
        });
    }
    let bytes = input.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    let is_word_byte =
        |b: &u8| !b.is_ascii_whitespace() && !matches!(b, b'(' | b')' | b'[' | b']' | b'"');
    while let Some(&c) = bytes.get(i) {
        match c {
            b'(' => toks.push(Tok::LParen),
            b')' => toks.push(Tok::RParen),
            b'[' => toks.push(Tok::LBracket),
            b']' => toks.push(Tok::RBracket),
            b'"' => {
                let start = i;
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err(FilterError::UnterminatedString(start)),
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                let literal = input.get(start..=i).ok_or(FilterError::BadString(start))?;
                let s: String =
                    serde_json::from_str(literal).map_err(|_| FilterError::BadString(start))?;
                toks.push(Tok::Str(s));
            }
            c if c.is_ascii_whitespace() => {}
            _ => {
                let start = i;
                while bytes.get(i).is_some_and(is_word_byte) {
                    i += 1;
                }
                // Stops only at ASCII bytes, so both ends are char boundaries.
                let word = input.get(start..i).ok_or(FilterError::BadString(start))?;
                toks.push(Tok::Word(word.to_string()));
                continue;
            }
        }
        i += 1;
    }
    Ok(toks)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
    expressions: usize,
    in_value_path: bool,
}

impl Parser {
    fn new(toks: Vec<Tok>) -> Self {
        Self {
            toks,
            pos: 0,
            depth: 0,
            expressions: 0,
            in_value_path: false,
        }
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Result<Tok, FilterError> {
        let t = self
            .toks
            .get(self.pos)
            .cloned()
            .ok_or(FilterError::UnexpectedEnd)?;
        self.pos += 1;
        Ok(t)
    }

    fn expect(&mut self, want: Tok) -> Result<(), FilterError> {
        let t = self.next()?;
        if t == want {
            Ok(())
        } else {
            Err(FilterError::Unexpected(format!(
                "{}, expected {}",
                t.describe(),
                want.describe()
            )))
        }
    }

    fn peek_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn enter(&mut self) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_FILTER_DEPTH {
            return Err(FilterError::TooDeep {
                max: MAX_FILTER_DEPTH,
            });
        }
        Ok(())
    }

    fn parse_or(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.parse_and()?;
        while self.peek_keyword("or") {
            self.pos += 1;
            let right = self.parse_and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.parse_unary()?;
        while self.peek_keyword("and") {
            self.pos += 1;
            let right = self.parse_unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_unary(&mut self) -> Result<Filter, FilterError> {
        let not_paren =
            self.peek_keyword("not") && self.toks.get(self.pos + 1) == Some(&Tok::LParen);
        if not_paren {
            self.pos += 2;
            self.enter()?;
            let inner = self.parse_or()?;
            self.expect(Tok::RParen)?;
            self.depth -= 1;
            return Ok(Filter::Not(Box::new(inner)));
        }
        match self.next()? {
            Tok::LParen => {
                self.enter()?;
                let inner = self.parse_or()?;
                self.expect(Tok::RParen)?;
                self.depth -= 1;
                Ok(inner)
            }
            Tok::Word(w) => self.parse_attr_exp(&w),
            t => Err(FilterError::Unexpected(t.describe())),
        }
    }

    fn count_expression(&mut self) -> Result<(), FilterError> {
        self.expressions += 1;
        if self.expressions > MAX_FILTER_EXPRESSIONS {
            return Err(FilterError::TooComplex {
                max: MAX_FILTER_EXPRESSIONS,
            });
        }
        Ok(())
    }

    fn parse_attr_exp(&mut self, word: &str) -> Result<Filter, FilterError> {
        let path = AttrPath::parse(word)?;
        if self.peek() == Some(&Tok::LBracket) {
            if self.in_value_path || path.sub.is_some() {
                return Err(FilterError::Unexpected("nested value path".into()));
            }
            let inner = self.parse_value_filter()?;
            return Ok(Filter::ValuePath(path, Box::new(inner)));
        }
        self.count_expression()?;
        let op_word = match self.next()? {
            Tok::Word(w) => w,
            t => {
                return Err(FilterError::Unexpected(format!(
                    "{}, expected an operator",
                    t.describe()
                )))
            }
        };
        if op_word.eq_ignore_ascii_case("pr") {
            return Ok(Filter::Present(path));
        }
        let op = CompareOp::parse(&op_word)
            .ok_or_else(|| FilterError::UnknownOperator(quoted(&op_word)))?;
        let value = match self.next()? {
            Tok::Str(s) => CompValue::String(s),
            Tok::Word(w) => parse_literal(&w)?,
            t => {
                return Err(FilterError::Unexpected(format!(
                    "{}, expected a value",
                    t.describe()
                )))
            }
        };
        Ok(Filter::Compare(path, op, value))
    }

    /// Parses `"[" valFilter "]"` (the `[` not yet consumed).
    fn parse_value_filter(&mut self) -> Result<Filter, FilterError> {
        self.expect(Tok::LBracket)?;
        self.enter()?;
        self.in_value_path = true;
        let inner = self.parse_or()?;
        self.in_value_path = false;
        self.expect(Tok::RBracket)?;
        self.depth -= 1;
        Ok(inner)
    }

    fn finish(&self) -> Result<(), FilterError> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(FilterError::Unexpected(t.describe())),
        }
    }
}

fn parse_literal(word: &str) -> Result<CompValue, FilterError> {
    if word.eq_ignore_ascii_case("true") {
        return Ok(CompValue::Bool(true));
    }
    if word.eq_ignore_ascii_case("false") {
        return Ok(CompValue::Bool(false));
    }
    if word.eq_ignore_ascii_case("null") {
        return Ok(CompValue::Null);
    }
    let starts_numeric = word.starts_with(|c: char| c == '-' || c.is_ascii_digit());
    let bad = || FilterError::BadValue(quoted(word));
    // serde_json checks the JSON number syntax; floats are then re-read with the standard
    // library, which rounds correctly, so printing and re-parsing gives the same value.
    let n = serde_json::from_str::<Number>(word)
        .ok()
        .filter(|_| starts_numeric)
        .ok_or_else(bad)?;
    if n.is_f64() {
        let x: f64 = word.parse().map_err(|_| bad())?;
        return Number::from_f64(x).map(CompValue::Number).ok_or_else(bad);
    }
    Ok(CompValue::Number(n))
}

/// Parses a `filter` query parameter (or a search request's filter).
#[tracing::instrument(level = "trace", skip_all, fields(len = input.len()))]
pub fn parse_filter(input: &str) -> Result<Filter, FilterError> {
    let toks = lex(input)?;
    if toks.is_empty() {
        return Err(FilterError::Empty);
    }
    let mut p = Parser::new(toks);
    let f = p.parse_or()?;
    p.finish()?;
    Ok(f)
}

/// A PATCH `path` (RFC 7644 §3.5.2): `attrPath` or `valuePath ["." subAttr]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    /// The attribute (its `sub` is set only for the plain `name.sub` form).
    pub attr: AttrPath,
    /// The value filter in brackets, if any.
    pub filter: Option<Filter>,
    /// The sub-attribute after the brackets (`emails[type eq "work"].value`).
    pub sub_after_filter: Option<String>,
}

impl fmt::Display for PatchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.attr)?;
        if let Some(flt) = &self.filter {
            write!(f, "[{flt}]")?;
        }
        if let Some(s) = &self.sub_after_filter {
            write!(f, ".{s}")?;
        }
        Ok(())
    }
}

/// Parses a PATCH path.
pub fn parse_path(input: &str) -> Result<PatchPath, FilterError> {
    let toks = lex(input)?;
    let mut p = Parser::new(toks);
    let attr = match p.next() {
        Ok(Tok::Word(w)) => AttrPath::parse(&w)?,
        Ok(t) => return Err(FilterError::Unexpected(t.describe())),
        Err(_) => return Err(FilterError::Empty),
    };
    let mut path = PatchPath {
        attr,
        filter: None,
        sub_after_filter: None,
    };
    if p.peek() == Some(&Tok::LBracket) {
        if path.attr.sub.is_some() {
            return Err(FilterError::BadAttrPath(quoted(input)));
        }
        path.filter = Some(p.parse_value_filter()?);
        if let Some(Tok::Word(w)) = p.peek() {
            let sub = w
                .strip_prefix('.')
                .filter(|s| is_attr_name(s))
                .ok_or_else(|| FilterError::BadAttrPath(quoted(input)))?
                .to_string();
            p.pos += 1;
            path.sub_after_filter = Some(sub);
        }
    }
    p.finish()?;
    Ok(path)
}

/// Finds a member of a JSON object by case-insensitive key (SCIM attribute names are
/// case-insensitive; an exact match wins).
pub fn get_ci<'v>(obj: &'v Value, key: &str) -> Option<&'v Value> {
    let map = obj.as_object()?;
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// Where attribute names in a filter are resolved.
#[derive(Clone, Copy)]
enum Scope<'s> {
    /// Against a whole resource.
    Root(&'s ResourceSchema),
    /// Inside a value path: names are sub-attributes of this (complex) attribute.
    Element(Option<&'s AttributeDef>),
}

/// Evaluates a filter against a resource with SCIM semantics: case-insensitive attribute names,
/// `caseExact` from the schema, multi-valued attributes matching when any value matches,
/// `dateTime` attributes compared as instants. `ne` is the negation of `eq` (so a resource
/// without the attribute matches `title ne "x"`); `eq null` matches an absent attribute.
pub fn matches(filter: &Filter, resource: &Value, schema: &ResourceSchema) -> bool {
    eval(filter, resource, Scope::Root(schema))
}

/// Evaluates a value-path filter (the part in brackets) against one element of the complex
/// attribute `parent`, as PATCH does for `members[value eq "x"]`.
pub fn matches_element(filter: &Filter, element: &Value, parent: &AttributeDef) -> bool {
    eval(filter, element, Scope::Element(Some(parent)))
}

fn eval(filter: &Filter, ctx: &Value, scope: Scope<'_>) -> bool {
    match filter {
        Filter::And(a, b) => eval(a, ctx, scope) && eval(b, ctx, scope),
        Filter::Or(a, b) => eval(a, ctx, scope) || eval(b, ctx, scope),
        Filter::Not(a) => !eval(a, ctx, scope),
        Filter::Present(path) => {
            let (values, _) = lookup(ctx, path, scope, true);
            values.iter().any(|v| is_present(v))
        }
        Filter::Compare(path, op, lit) => {
            let (values, def) = lookup(ctx, path, scope, true);
            let any_eq =
                |values: &[&Value]| values.iter().any(|v| compare(v, def, CompareOp::Eq, lit));
            match (op, lit) {
                (CompareOp::Eq, CompValue::Null) => !values.iter().any(|v| is_present(v)),
                (CompareOp::Ne, CompValue::Null) => values.iter().any(|v| is_present(v)),
                (CompareOp::Ne, _) => !any_eq(&values),
                _ => values.iter().any(|v| compare(v, def, *op, lit)),
            }
        }
        Filter::ValuePath(path, inner) => {
            let (values, def) = lookup(ctx, path, scope, false);
            values
                .iter()
                .any(|elem| elem.is_object() && eval(inner, elem, Scope::Element(def)))
        }
    }
}

fn is_present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => a.iter().any(is_present),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// Collects the leaf values a path selects, flattening multi-valued attributes. With
/// `value_of_complex`, a complex value stands for its `value` sub-attribute (RFC 7644: a filter
/// on `emails` compares `emails.value`).
fn lookup<'v, 's>(
    ctx: &'v Value,
    path: &AttrPath,
    scope: Scope<'s>,
    value_of_complex: bool,
) -> (Vec<&'v Value>, Option<&'s AttributeDef>) {
    let (attr, mut def) = match scope {
        Scope::Root(schema) => resolve_root(ctx, path, schema),
        Scope::Element(parent) => {
            if path.sub.is_some() {
                return (Vec::new(), None);
            }
            (
                get_ci(ctx, &path.name),
                parent.and_then(|p| p.sub_attribute(&path.name)),
            )
        }
    };
    let mut out: Vec<&Value> = Vec::new();
    let Some(attr) = attr else {
        return (out, def);
    };
    let top: Vec<&Value> = match attr {
        Value::Array(a) => a.iter().collect(),
        v => vec![v],
    };
    match (&path.sub, scope) {
        (Some(sub), Scope::Root(_)) => {
            def = def.and_then(|d| d.sub_attribute(sub));
            for v in top {
                match get_ci(v, sub) {
                    Some(Value::Array(a)) => out.extend(a.iter()),
                    Some(x) => out.push(x),
                    None => {}
                }
            }
        }
        _ => out = top,
    }
    if value_of_complex && out.iter().any(|v| v.is_object()) {
        let value_def = def.and_then(|d| d.sub_attribute("value"));
        let values: Vec<&Value> = out
            .iter()
            .map(|v| get_ci(v, "value").unwrap_or(v))
            .collect();
        return (values, value_def.or(def));
    }
    (out, def)
}

fn resolve_root<'v, 's>(
    resource: &'v Value,
    path: &AttrPath,
    schema: &'s ResourceSchema,
) -> (Option<&'v Value>, Option<&'s AttributeDef>) {
    match path.urn.as_deref() {
        None => (
            get_ci(resource, &path.name),
            schema.core_attribute(&path.name),
        ),
        Some(u) if schema.is_core(u) => (
            get_ci(resource, &path.name),
            schema.core_attribute(&path.name),
        ),
        Some(u) => match schema.extension(u) {
            Some(ext) => (
                get_ci(resource, &ext.id).and_then(|e| get_ci(e, &path.name)),
                ext.attribute(&path.name),
            ),
            // `urn:...:enterprise:2.0:User` alone names the whole extension object.
            None => (get_ci(resource, &format!("{u}:{}", path.name)), None),
        },
    }
}

fn compare(v: &Value, def: Option<&AttributeDef>, op: CompareOp, lit: &CompValue) -> bool {
    match (v, lit) {
        (Value::String(a), CompValue::String(b)) => {
            if def.is_some_and(|d| d.ty == AttrType::DateTime) {
                if let (Ok(x), Ok(y)) = (
                    chrono::DateTime::parse_from_rfc3339(a),
                    chrono::DateTime::parse_from_rfc3339(b),
                ) {
                    return ordering_holds(x.cmp(&y), op);
                }
            }
            let case_exact = def.is_some_and(|d| d.case_exact);
            let (a, b) = if case_exact {
                (a.clone(), b.clone())
            } else {
                (a.to_lowercase(), b.to_lowercase())
            };
            match op {
                CompareOp::Co => a.contains(&b),
                CompareOp::Sw => a.starts_with(&b),
                CompareOp::Ew => a.ends_with(&b),
                _ => ordering_holds(a.cmp(&b), op),
            }
        }
        (Value::Number(a), CompValue::Number(b)) => {
            let ord = match (a.as_i64(), b.as_i64()) {
                (Some(x), Some(y)) => Some(x.cmp(&y)),
                _ => a
                    .as_f64()
                    .zip(b.as_f64())
                    .and_then(|(x, y)| x.partial_cmp(&y)),
            };
            ord.is_some_and(|o| ordering_holds(o, op))
        }
        (Value::Bool(a), CompValue::Bool(b)) => op == CompareOp::Eq && a == b,
        // Entra and Okta sometimes store booleans as "True"/"False" strings.
        (Value::String(a), CompValue::Bool(b)) => {
            op == CompareOp::Eq && a.eq_ignore_ascii_case(if *b { "true" } else { "false" })
        }
        _ => false,
    }
}

fn ordering_holds(ord: Ordering, op: CompareOp) -> bool {
    match op {
        CompareOp::Eq => ord == Ordering::Equal,
        CompareOp::Ne => ord != Ordering::Equal,
        CompareOp::Gt => ord == Ordering::Greater,
        CompareOp::Ge => ord != Ordering::Less,
        CompareOp::Lt => ord == Ordering::Less,
        CompareOp::Le => ord != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

/// Rejects filters RFC 7644 says must fail with `invalidFilter`: ordering or substring
/// operators on boolean, binary or complex attributes. Unknown attributes are allowed (they
/// simply match nothing), as most servers and IdPs expect.
pub fn check_filter(filter: &Filter, schema: &ResourceSchema) -> Result<(), ScimError> {
    check(filter, Scope::Root(schema))
}

fn check(filter: &Filter, scope: Scope<'_>) -> Result<(), ScimError> {
    match filter {
        Filter::And(a, b) | Filter::Or(a, b) => {
            check(a, scope)?;
            check(b, scope)
        }
        Filter::Not(a) => check(a, scope),
        Filter::Present(_) => Ok(()),
        Filter::ValuePath(path, inner) => {
            let def = match scope {
                Scope::Root(schema) => resolve_root(&Value::Null, path, schema).1,
                Scope::Element(parent) => parent.and_then(|p| p.sub_attribute(&path.name)),
            };
            check(inner, Scope::Element(def))
        }
        Filter::Compare(path, op, _) => {
            let (_, def) = lookup(&Value::Null, path, scope, false);
            let ty = def.map(|d| {
                if d.ty == AttrType::Complex {
                    d.sub_attribute("value").map_or(AttrType::Complex, |v| v.ty)
                } else {
                    d.ty
                }
            });
            let substring = matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew);
            match ty {
                Some(AttrType::Boolean | AttrType::Binary | AttrType::Complex)
                    if op.is_ordering() || substring =>
                {
                    Err(ScimError::invalid_filter(format!(
                        "operator {} is not supported on attribute {path}",
                        op.as_str()
                    )))
                }
                _ => Ok(()),
            }
        }
    }
}

/// Attributes the store keeps an index on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexedAttr {
    /// `userName` (caseExact false: index case-folded).
    UserName,
    /// `externalId` (caseExact true).
    ExternalId,
    /// `displayName` (caseExact false: index case-folded).
    DisplayName,
}

/// A filter the server can answer from an index instead of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexLookup<'f> {
    /// Which attribute.
    pub attr: IndexedAttr,
    /// The value compared with `eq`, exactly as the client sent it.
    pub value: &'f str,
}

/// Recognises `userName eq "x"`, `externalId eq "x"` and `displayName eq "x"` (the lookups
/// Okta and Entra make before every create). Candidates from the index must still be confirmed
/// with [`matches()`], which applies `caseExact`.
pub fn index_lookup(filter: &Filter) -> Option<IndexLookup<'_>> {
    let Filter::Compare(path, CompareOp::Eq, CompValue::String(value)) = filter else {
        return None;
    };
    let attr = [
        ("userName", IndexedAttr::UserName),
        ("externalId", IndexedAttr::ExternalId),
        ("displayName", IndexedAttr::DisplayName),
    ]
    .into_iter()
    .find(|(name, _)| path.is_core_simple(name))?
    .1;
    Some(IndexLookup { attr, value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> Filter {
        match parse_filter(s) {
            Ok(f) => f,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    fn cmp(name: &str, op: CompareOp, v: CompValue) -> Filter {
        Filter::Compare(AttrPath::simple(name), op, v)
    }

    fn st(s: &str) -> CompValue {
        CompValue::String(s.into())
    }

    #[test]
    fn parses_every_operator_case_insensitively() {
        for op in ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"] {
            let f = p(&format!("title {} \"x\"", op.to_uppercase()));
            let want = CompareOp::parse(op).map(|o| cmp("title", o, st("x")));
            assert_eq!(Some(f), want);
        }
        assert_eq!(p("title PR"), Filter::Present(AttrPath::simple("title")));
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let f = p("a eq 1 or b eq 2 and c eq 3");
        let one = || CompValue::Number(1.into());
        let want = Filter::Or(
            Box::new(cmp("a", CompareOp::Eq, one())),
            Box::new(Filter::And(
                Box::new(cmp("b", CompareOp::Eq, CompValue::Number(2.into()))),
                Box::new(cmp("c", CompareOp::Eq, CompValue::Number(3.into()))),
            )),
        );
        assert_eq!(f, want);
        let grouped = p("(a eq 1 or b eq 2) and c eq 3");
        assert!(matches!(grouped, Filter::And(ref l, _) if matches!(**l, Filter::Or(..))));
    }

    #[test]
    fn parses_not_value_path_urn_and_literals() {
        let f = p(
            r#"not (emails[type eq "work" and primary eq TRUE]) and meta.lastModified gt "2011-05-13T04:42:34Z""#,
        );
        let Filter::And(l, r) = f else {
            panic!("not an and")
        };
        let Filter::Not(inner) = *l else {
            panic!("not a not")
        };
        assert!(matches!(*inner, Filter::ValuePath(ref a, _) if a.name == "emails"));
        assert!(
            matches!(*r, Filter::Compare(ref a, CompareOp::Gt, _) if a.sub.as_deref() == Some("lastModified"))
        );

        let f = p("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq \"x\\\"y\\u0041\"");
        let Filter::Compare(path, _, v) = f else {
            panic!("not a compare")
        };
        assert_eq!(
            path.urn.as_deref(),
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
        );
        assert_eq!(
            (path.name.as_str(), path.sub.as_deref()),
            ("manager", Some("value"))
        );
        assert_eq!(v, st("x\"yA"));
        assert_eq!(p("x eq null"), cmp("x", CompareOp::Eq, CompValue::Null));
        assert_eq!(
            p("x eq -1.5e2"),
            cmp(
                "x",
                CompareOp::Eq,
                CompValue::Number(Number::from_f64(-150.0).unwrap_or(0.into()))
            )
        );
    }

    #[test]
    fn rejects_malformed_filters() {
        let bad = [
            "",
            "   ",
            "userName",
            "userName eq",
            "userName xx \"a\"",
            "userName eq \"a",
            "userName eq bare",
            "(userName eq \"a\"",
            "userName eq \"a\")",
            "userName eq \"a\" and",
            "1abc eq \"a\"",
            "a.b.c eq 1",
            "emails[type eq \"work\"",
            "emails[type eq \"work\"]]",
            "emails[x[y eq 1]]",
            "not userName eq \"a\"",
            "a eq 01",
            "a eq \"\\x\"",
            "urn:foo: eq 1",
            "a eq \"x\" or or b eq 1",
            "emails[]",
        ];
        for s in bad {
            assert!(parse_filter(s).is_err(), "accepted {s:?}");
        }
        let e: ScimError = parse_filter("a eq")
            .err()
            .map(Into::into)
            .unwrap_or_else(|| ScimError::internal("x"));
        assert_eq!(e.to_json()["scimType"], "invalidFilter");
    }

    #[test]
    fn limits_reject_hostile_filters() {
        let deep = format!("{}a eq 1{}", "(".repeat(100), ")".repeat(100));
        assert_eq!(
            parse_filter(&deep),
            Err(FilterError::TooDeep {
                max: MAX_FILTER_DEPTH
            })
        );
        let nots = format!("{}a eq 1{}", "not (".repeat(40), ")".repeat(40));
        assert!(matches!(
            parse_filter(&nots),
            Err(FilterError::TooDeep { .. })
        ));
        let long = vec!["a eq 1"; 100].join(" and ");
        assert!(matches!(
            parse_filter(&long),
            Err(FilterError::TooComplex { .. })
        ));
        let huge = "a".repeat(MAX_FILTER_LEN + 1);
        assert!(matches!(
            parse_filter(&huge),
            Err(FilterError::TooLong { .. })
        ));
        // Just inside the limits still parses.
        let ok = format!(
            "{}a eq 1{}",
            "(".repeat(MAX_FILTER_DEPTH),
            ")".repeat(MAX_FILTER_DEPTH)
        );
        assert!(parse_filter(&ok).is_ok());
    }

    #[test]
    fn display_round_trips() {
        for s in [
            r#"userName eq "bjensen""#,
            r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#,
            r#"not (title pr) and userType ne "Employee""#,
            r#"urn:ietf:params:scim:schemas:core:2.0:User:name.familyName sw "J\n\"x""#,
        ] {
            let f = p(s);
            assert_eq!(p(&f.to_string()), f, "{s}");
        }
        // Minimal parentheses: kept where they change the tree, dropped where they do not.
        assert_eq!(
            p("a pr or (b pr or c pr)").to_string(),
            "a pr or (b pr or c pr)"
        );
        assert_eq!(
            p("(a pr or b pr) or c pr").to_string(),
            "a pr or b pr or c pr"
        );
        assert_eq!(
            p("(a pr or b pr) and c pr").to_string(),
            "(a pr or b pr) and c pr"
        );
        assert_eq!(
            p("a pr and (b pr and c pr)").to_string(),
            "a pr and (b pr and c pr)"
        );
        // A long flat chain prints flat, so it stays within the depth limit.
        let chain = vec!["a eq 1"; MAX_FILTER_EXPRESSIONS].join(" and ");
        let f = p(&chain);
        assert_eq!(f.to_string(), chain);
    }

    fn user() -> Value {
        json!({
            "schemas": [USER_SCHEMA],
            "id": "2819c223",
            "externalId": "AbC",
            "userName": "BJensen@Example.com",
            "name": {"familyName": "Jensen", "givenName": "Barbara"},
            "active": true,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "meta": {"lastModified": "2011-05-13T04:42:34Z"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Tour Operations", "manager": {"value": "m1"}}
        })
    }

    fn m(s: &str) -> bool {
        matches(&p(s), &user(), ResourceSchema::user())
    }

    #[test]
    fn evaluates_case_exactness_per_schema() {
        assert!(m(r#"USERNAME eq "bjensen@example.com""#));
        assert!(m(r#"userName sw "BJENSEN""#));
        assert!(m(r#"externalId eq "AbC""#));
        assert!(!m(r#"externalId eq "abc""#));
        assert!(!m(r#"id eq "2819C223""#));
        assert!(m(r#"id eq "2819c223""#));
        assert!(m(r#"name.familyName co "ENS""#));
    }

    #[test]
    fn evaluates_multi_valued_value_paths_and_extensions() {
        assert!(m(r#"emails co "jensen.org""#));
        assert!(m(r#"emails.type eq "home""#));
        assert!(m(r#"emails[type eq "work" and primary eq true]"#));
        assert!(!m(r#"emails[type eq "home" and primary eq true]"#));
        assert!(m(
            r#"emails[type eq "home"] and not (emails[type eq "other"])"#
        ));
        assert!(m(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "tour operations""#
        ));
        assert!(m(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "m1""#
        ));
        assert!(!m(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "x""#
        ));
        assert!(m(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User pr"#
        ));
        assert!(m(
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName pr"#
        ));
    }

    #[test]
    fn evaluates_pr_ne_null_booleans_and_dates() {
        assert!(m("title eq null"));
        assert!(!m("title pr"));
        assert!(m("userName pr"));
        assert!(m(r#"title ne "x""#));
        assert!(!m(r#"userName ne "bjensen@example.com""#));
        assert!(m("active eq true"));
        assert!(!m("active eq false"));
        assert!(m(r#"meta.lastModified gt "2011-05-13T00:00:00Z""#));
        // Same instant written with an offset: a string compare would say "less".
        assert!(m(r#"meta.lastModified eq "2011-05-13T06:42:34+02:00""#));
        assert!(!m(r#"meta.lastModified lt "2011-05-13T04:42:34Z""#));
        assert!(m(r#"meta.lastModified le "2011-05-13T04:42:34Z""#));
        let mut u = user();
        u["active"] = json!("False");
        assert!(matches(&p("active eq false"), &u, ResourceSchema::user()));
    }

    #[test]
    fn evaluates_numbers() {
        let r = json!({"x": 10, "y": 2.5});
        let s = ResourceSchema::user();
        assert!(matches(&p("x gt 9"), &r, s));
        assert!(!matches(&p("x gt 10"), &r, s));
        assert!(matches(&p("x ge 10.0"), &r, s));
        assert!(matches(&p("y lt 3"), &r, s));
        assert!(!matches(&p("y co 2"), &r, s));
    }

    #[test]
    fn check_filter_rejects_ordering_on_booleans() {
        let s = ResourceSchema::user();
        assert!(check_filter(&p("active gt true"), s).is_err());
        assert!(check_filter(&p(r#"emails[primary co "t"]"#), s).is_err());
        assert!(check_filter(&p("active eq true"), s).is_ok());
        assert!(check_filter(&p(r#"userName gt "a""#), s).is_ok());
    }

    #[test]
    fn index_lookup_recognises_simple_shapes_only() {
        let f = p(r#"userName eq "a@b.c""#);
        assert_eq!(
            index_lookup(&f),
            Some(IndexLookup {
                attr: IndexedAttr::UserName,
                value: "a@b.c"
            })
        );
        let f = p(r#"EXTERNALID Eq "x1""#);
        assert_eq!(
            index_lookup(&f).map(|l| l.attr),
            Some(IndexedAttr::ExternalId)
        );
        let f = p(r#"urn:ietf:params:scim:schemas:core:2.0:Group:displayName eq "G""#);
        assert_eq!(
            index_lookup(&f).map(|l| l.attr),
            Some(IndexedAttr::DisplayName)
        );
        for s in [
            r#"userName ne "a""#,
            r#"userName eq 1"#,
            r#"name.userName eq "a""#,
            r#"title eq "a""#,
            r#"userName eq "a" and active eq true"#,
            r#"urn:x:y:userName eq "a""#,
        ] {
            assert_eq!(index_lookup(&p(s)), None, "{s}");
        }
    }

    #[test]
    fn parses_patch_paths() {
        let pp = parse_path(r#"emails[type eq "work"].value"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pp.attr, AttrPath::simple("emails"));
        assert_eq!(pp.filter, Some(cmp("type", CompareOp::Eq, st("work"))));
        assert_eq!(pp.sub_after_filter.as_deref(), Some("value"));
        assert_eq!(parse_path(&pp.to_string()).ok(), Some(pp));
        let pp = parse_path("name.givenName").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pp.attr.sub.as_deref(), Some("givenName"));
        let pp =
            parse_path("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department")
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pp.attr.name, "department");
        for bad in [
            "",
            "emails[",
            "emails[type eq \"w\"]value",
            "emails[type eq \"w\"].",
            "a b",
            "name.x[y eq 1]",
            "emails[type eq \"w\"].value.x",
        ] {
            assert!(parse_path(bad).is_err(), "accepted {bad:?}");
        }
    }
}
