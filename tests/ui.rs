//! Compile-time guarantees: `tests/ui/fail` holds one mistake per fixture, each with the
//! `.stderr` a user sees; `tests/ui/pass` holds every declaration form.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
