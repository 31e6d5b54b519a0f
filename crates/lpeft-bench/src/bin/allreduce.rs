//! `lpeft-allreduce`: see `lpeft_bench::collective`.

fn main() -> anyhow::Result<()> {
    lpeft_bench::collective::run(std::env::args_os())
}
