//! Nothing here: the tests live in `tests/web.rs` and run only on wasm32 in a browser.
