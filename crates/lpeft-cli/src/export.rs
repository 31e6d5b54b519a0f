//! `lpeft export`: the command around `lpeft_predict::export` (which does the work).

use anyhow::Context;
use lpeft_predict::export::{self, Format};
use lpeft_predict::load::Locations;
use lpeft_predict::{ModelRef, TrainedModel};
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
    let at = Locations {
        model_dirs: std::env::var_os("MODEL_DIR")
            .filter(|v| !v.is_empty())
            .map(Into::into)
            .into_iter()
            .collect(),
        tokenizer: args.tokenizer.clone(),
    };
    let trained = match ModelRef::parse(&args.model) {
        ModelRef::Dir(dir) => lpeft_predict::bundle::read(&dir, &at)?,
        reference => {
            let store = store()?;
            let trained = TrainedModel::open(&store, &reference, &at)?;
            store.flush();
            trained
        }
    };
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
