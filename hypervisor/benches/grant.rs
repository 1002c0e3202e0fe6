//! Grant-copy and page-flip benchmarks: written in the next commit.
fn main() {}
