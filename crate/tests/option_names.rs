//! Every option enum's names agree: `name()`, `FromStr` and serde (what the CLI, the wasm
//! options and JSON use) give each variant the same string, and an unknown name is a
//! `bad_options` error that lists the known ones.

use std::fmt::Debug;
use std::str::FromStr;

use hearth::{EvictionPolicy, ExitMeasure, PromptPruneMethod, SpeculativeMethod};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn check<T>(all: &[T], names: &[&str], name: fn(T) -> &'static str)
where
    T: Copy + Debug + PartialEq + Serialize + DeserializeOwned + FromStr<Err = hearth::Error>,
{
    assert_eq!(all.len(), names.len());
    for (&v, &n) in all.iter().zip(names) {
        assert_eq!(name(v), n);
        assert_eq!(T::from_str(n).unwrap(), v);
        assert_eq!(serde_json::to_string(&v).unwrap(), format!("\"{n}\""));
        assert_eq!(serde_json::from_str::<T>(&format!("\"{n}\"")).unwrap(), v);
    }
    let err = T::from_str("no-such-name").unwrap_err();
    assert_eq!(err.kind(), "bad_options");
    let text = err.to_string();
    assert!(names.iter().all(|n| text.contains(n)), "{text}");
}

#[test]
fn every_option_enum_has_one_name_per_variant() {
    check(EvictionPolicy::ALL, EvictionPolicy::NAMES, EvictionPolicy::name);
    check(PromptPruneMethod::ALL, PromptPruneMethod::NAMES, PromptPruneMethod::name);
    check(SpeculativeMethod::ALL, SpeculativeMethod::NAMES, SpeculativeMethod::name);
    check(ExitMeasure::ALL, ExitMeasure::NAMES, ExitMeasure::name);
}
