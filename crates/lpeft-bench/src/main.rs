//! `lpeft-bench`: see the library's documentation.

fn main() -> anyhow::Result<()> {
    lpeft_bench::run(std::env::args_os(), &mut |_| {}).map(|_| ())
}
