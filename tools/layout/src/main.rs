//! `layout-check [WORKSPACE]`: prints import cycles between files and
//! oversized source files; exits 1 when it finds any.

fn main() {
    let root = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    match gpuctl_layout::check_workspace(&root) {
        Ok(report) => {
            println!("{report}");
            if !report.is_clean() {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("layout-check: reading {}: {e}", root.display());
            std::process::exit(2);
        }
    }
}
