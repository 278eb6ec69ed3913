//! Constant `object` discriminators ("organization", "list", ...).
//!
//! A zero-sized tag type per object kind means a value can never carry the wrong `object`
//! string, and deserializing a foreign object kind fails loudly.

/// Declares a unit struct that (de)serializes as one fixed string.
#[macro_export]
macro_rules! object_tag {
    ($name:ident, $value:literal) => {
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name;

        impl $name {
            pub const VALUE: &'static str = $value;
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($value)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                if s == $value {
                    Ok($name)
                } else {
                    Err(serde::de::Error::custom(format!(
                        "expected object \"{}\", got \"{}\"",
                        $value, s
                    )))
                }
            }
        }
    };
}

object_tag!(OrganizationTag, "organization");
object_tag!(OrganizationDomainTag, "organization_domain");
object_tag!(ConnectionTag, "connection");
object_tag!(ConnectionDomainTag, "connection_domain");
object_tag!(DirectoryTag, "directory");
object_tag!(DirectoryUserTag, "directory_user");
object_tag!(DirectoryGroupTag, "directory_group");
object_tag!(ProfileTag, "profile");
object_tag!(EventTag, "event");
object_tag!(ListTag, "list");
object_tag!(RoleTag, "role");
object_tag!(OrganizationRoleTag, "organization_role");
