// idbridge: vendored code; its warnings are upstream's (cargo caps lints of registry crates the
// same way). See PATCHES.md.
#![allow(warnings)]
pub mod attribute;
pub mod crypto;
pub mod idp;
pub mod key_info;
pub mod metadata;
pub mod schema;
pub mod service_provider;
pub mod signature;

pub mod traits;

#[macro_use]
extern crate derive_builder;
