//! Misuse of `#[tiger::task]` is a compile error that points at the mistake: one misuse per
//! file in `tests/ui/`, the expected message next to it in a `.stderr` file.
//! Regenerate after an intended change with `TRYBUILD=overwrite cargo test --test ui`.

#[test]
fn misuse_is_a_clear_compile_error() {
    trybuild::TestCases::new().compile_fail("ui/*.rs");
}
