//! Runs one input through a target outside libFuzzer: `cargo run --release --example repro --
//! <target> <file>...`.
fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().expect("usage: repro <target> <file>...");
    let run = splitnet_fuzz::seeds::target(&target);
    for f in args {
        let data = std::fs::read(&f).expect("read input");
        println!("{f}: {} bytes", data.len());
        run(&data);
    }
}
