//! The workspace keeps the layout rules: no import cycle between the files of
//! a crate, no source file over the line limit. The failure lists each
//! cycle's files and each oversized file.

#[test]
fn the_workspace_keeps_the_layout_rules() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let report = gpuctl_layout::check_workspace(&root).expect("workspace readable");
    assert!(report.files > 100, "read too few files: {report}");
    assert!(report.is_clean(), "{report}");
}
