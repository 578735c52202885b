use super::*;

/// A throwaway crate on disk: (relative path, text) pairs under `src/`.
fn krate(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let root = std::env::temp_dir().join(format!("layout-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::write(
        {
            std::fs::create_dir_all(&root).unwrap();
            root.join("Cargo.toml")
        },
        "[workspace]\nmembers = [\"k\"]\n",
    )
    .unwrap();
    for (path, text) in files {
        let p = root.join("k/src").join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    root
}

fn check(name: &str, files: &[(&str, &str)]) -> Report {
    let root = krate(name, files);
    let r = check_workspace(&root).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    r
}

#[test]
fn a_circle_through_three_files_is_found() {
    let r = check(
        "three",
        &[
            ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
            ("a.rs", "use crate::b::B;\npub struct A;\n"),
            ("b.rs", "pub struct B;\nfn f() { crate::c::g(); }\n"),
            ("c.rs", "use super::a::{A, self};\npub fn g() {}\n"),
        ],
    );
    assert_eq!(r.cycles.len(), 1, "{r}");
    assert_eq!(r.cycles[0].len(), 3, "{r}");
}

#[test]
fn one_direction_is_not_a_circle() {
    let r = check(
        "line",
        &[
            ("lib.rs", "pub mod a;\npub mod b;\n"),
            ("a.rs", "use crate::b::B;\n"),
            (
                "b.rs",
                "// use crate::a::A;\nconst S: &str = \"crate::a::A\";\npub struct B;\n",
            ),
        ],
    );
    assert!(r.is_clean(), "{r}");
}

#[test]
fn a_facade_that_reexports_its_children_is_not_a_circle() {
    let r = check(
        "facade",
        &[
            ("lib.rs", "pub mod state;\n"),
            (
                "state/mod.rs",
                "mod command;\nmod jobs;\npub use command::Command;\npub struct State;\n",
            ),
            ("state/command.rs", "pub enum Command {}\n"),
            ("state/jobs.rs", "use super::{Command, State};\n"),
        ],
    );
    assert!(r.is_clean(), "{r}");
}

#[test]
fn a_parent_and_child_that_use_each_other_are_a_circle() {
    let r = check(
        "pc",
        &[
            ("lib.rs", "mod a;\n"),
            ("a.rs", "mod b;\npub struct X;\nfn f() { b::g(); }\n"),
            ("a/b.rs", "use super::X;\npub fn g() {}\n"),
        ],
    );
    assert_eq!(r.cycles.len(), 1, "{r}");
}

#[test]
fn test_code_is_left_out_of_both_rules() {
    let mut big = String::from("pub struct A;\n#[cfg(test)]\nmod tests {\n    use crate::b::B;\n");
    for _ in 0..MAX_LINES {
        big.push_str("    // a test line\n");
    }
    big.push_str("}\n");
    let r = check(
        "tests",
        &[
            (
                "lib.rs",
                "pub mod a;\npub mod b;\n#[cfg(test)]\nmod big_tests;\n",
            ),
            ("a.rs", &big),
            ("b.rs", "use crate::a::A;\npub struct B;\n"),
            ("big_tests.rs", "use crate::a::A;\n"),
        ],
    );
    assert!(r.is_clean(), "{r}");
    assert_eq!(r.files, 3, "the test-only module is not read");
}

#[test]
fn a_file_over_the_limit_is_named() {
    let text = "fn f() {}\n".repeat(MAX_LINES + 1);
    let r = check("big", &[("lib.rs", "mod a;\n"), ("a.rs", &text)]);
    assert_eq!(r.oversized.len(), 1, "{r}");
    assert!(r.oversized[0].0.ends_with("k/src/a.rs"));
    assert_eq!(r.oversized[0].1, MAX_LINES + 1);
}

#[test]
fn binaries_are_crates_of_their_own() {
    let r = check(
        "bins",
        &[
            ("lib.rs", "pub mod a;\n"),
            ("a.rs", "pub struct A;\n"),
            ("main.rs", "mod cli;\nfn main() { cli::run(); }\n"),
            ("cli.rs", "pub fn run() {}\n"),
            ("bin/tool.rs", "fn main() {}\n"),
        ],
    );
    assert!(r.is_clean(), "{r}");
    assert_eq!(r.files, 5);
}
