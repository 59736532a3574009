//! Option enums named once: a variant's name is what the CLI, the wasm options and serde call
//! it, and `name()`, `NAMES` and `FromStr` all come from the one table [`named_enum!`] is given.

/// `a, b or c`: how an error lists the names it expected.
pub fn listed(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// Implements `name()`, `ALL`, `NAMES` and [`std::str::FromStr`] (unknown names are a
/// `bad_options` error naming `$what` and listing the names) for an enum, from
/// `Variant => "name"` pairs. Serde's names are the enum's own attributes; a unit test per
/// enum checks that they agree.
macro_rules! named_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every variant, in the table's order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];
            /// Every name, in the table's order.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// What the CLI, the wasm options and serde call this value.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)+
                }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::error::Error;

            fn from_str(s: &str) -> $crate::error::Result<Self> {
                Self::ALL.iter().copied().find(|v| v.name() == s).ok_or_else(|| {
                    $crate::error::Error::BadOptions(format!(
                        concat!("unknown ", $what, " {:?}: expected {}"),
                        s,
                        $crate::names::listed(Self::NAMES)
                    ))
                })
            }
        }
    };
}

pub(crate) use named_enum;

#[cfg(test)]
mod tests {
    use super::listed;

    #[test]
    fn names_are_listed_with_or() {
        assert_eq!(listed(&["a"]), "a");
        assert_eq!(listed(&["a", "b", "c"]), "a, b or c");
    }
}
