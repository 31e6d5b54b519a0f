//! `lpeft export`: the command around `lpeft_predict::export` (which does the work).

use anyhow::Context;
use lpeft_predict::export::{self, Format};
use lpeft_store::Store;

use crate::cli::{ExportArgs, GlobalArgs};
use crate::output::Reporter;

pub fn export(
    args: &ExportArgs,
    global: &GlobalArgs,
    store: impl FnOnce() -> anyhow::Result<Store>,
    out: &Reporter,
) -> anyhow::Result<()> {
    let format = Format::parse(&args.format).expect("clap checked the format");
    let trained = crate::predict::open_trained(&args.model, args.tokenizer.clone(), store)?;
    export::check_exportable(&trained.spec, format)?;
    let device = lpeft_model::device::device(&global.backend)?;
    let model = trained
        .build(&device)
        .context("cannot rebuild the trained model")?;
    if let Some(file) = &args.reference {
        export::reference::write(&model, &device, file)?;
        out.detail(format!(
            "wrote our logits on the fixed inputs to {}",
            file.display()
        ));
    }
    let target = export::Target {
        format,
        out: args.out.clone(),
        force: args.force,
        base: args.base.clone(),
    };
    let done = export::export(&trained, model, &target)?;
    out.line(format!(
        "wrote {} ({} format: {} tensors; {})",
        done.dir.display(),
        args.format,
        done.tensors,
        done.files.join(", ")
    ));
    Ok(())
}
