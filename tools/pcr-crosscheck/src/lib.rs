//! Nothing here: the package exists for its test, `tests/eif_builder.rs`.
