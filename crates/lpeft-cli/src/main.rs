//! `lpeft`: the only binary. Parses arguments, sets up logging and output, and hands over to
//! the pipeline and store crates.

mod cli;
mod commands;
mod devices;
mod export;
mod output;
mod predict;
mod progress;
mod report;
mod run_view;
mod setup;
mod slurm;
mod stages;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use lpeft_pipeline::Registry;

use crate::cli::{Cli, GlobalArgs, StageArgs};

fn main() -> ExitCode {
    let registry = Registry::new(stages::stages());
    let mut command = Cli::command();
    for stage in registry.iter() {
        let about = match stage.about() {
            "" => format!("Run the `{}` stage alone", stage.kind()),
            about => format!("{about} (stage `{}`)", stage.kind()),
        };
        let mut sub = clap::Command::new(stage.kind()).about(about);
        for (long, param, help) in stage_flags(stage.kind()) {
            let arg = clap::Arg::new(*param).long(*long).value_name("VALUE");
            sub = sub.arg(arg.help(*help).help_heading("Stage options"));
        }
        command = command.subcommand(<StageArgs as clap::Args>::augment_args(sub));
    }
    let matches = command.get_matches();
    let parsed = match matches.subcommand() {
        Some((name, sub)) if registry.get(name).is_some() => GlobalArgs::from_arg_matches(&matches)
            .and_then(|g| {
                StageArgs::from_arg_matches(sub).map(|mut a| {
                    // Named flags are `--param`s given first, so an explicit `--param` wins.
                    let named = stage_flags(name).iter().filter_map(|(_, param, _)| {
                        sub.get_one::<String>(param).map(|v| format!("{param}={v}"))
                    });
                    a.params = named.chain(a.params).collect();
                    (g, commands::Action::Stage(name.to_string(), a))
                })
            }),
        _ => Cli::from_arg_matches(&matches)
            .map(|c| (c.global, commands::Action::Builtin(c.command))),
    };
    let (mut global, action) = match parsed {
        Ok(p) => p,
        Err(e) => e.exit(),
    };
    global.backend_given = !matches!(
        matches.value_source("backend"),
        None | Some(clap::parser::ValueSource::DefaultValue)
    );
    init_logging(&global);
    quiet_stage_panics();
    let reporter = output::Reporter::new(global.quiet, !global.no_progress);
    match commands::dispatch(&global, action, &registry, &reporter) {
        Ok(code) => code,
        Err(e) => {
            tracing::debug!("{e:?}");
            reporter.error(&error_message(&e));
            for hint in setup::hints(&e) {
                reporter.hint(&hint);
            }
            ExitCode::FAILURE
        }
    }
}

/// A stage's panic is reported once, as that stage's failure, by the runner; the default hook
/// would print it (and a backtrace note) from every panicking thread first. Panics elsewhere,
/// and all of them under RUST_BACKTRACE, keep the default report.
fn quiet_stage_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_stage = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with(lpeft_pipeline::run::STAGE_THREAD));
        if in_stage && std::env::var_os("RUST_BACKTRACE").is_none() {
            tracing::debug!("{info}");
        } else {
            default(info);
        }
    }));
}

/// The error and its causes joined by ": ", leaving out a cause whose text an outer message
/// already holds (errors that print their source inside their own message).
fn error_message(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain().map(ToString::to_string) {
        if message.contains(&cause) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&cause);
    }
    message
}

/// Named flags of a stage subcommand, each a shorthand for `--param NAME=VALUE`:
/// (long flag, parameter, help). `lpeft data --task glue/sst2 --data-dir DIR --model DIR`.
fn stage_flags(kind: &str) -> &'static [(&'static str, &'static str, &'static str)] {
    match kind {
        lpeft_data::stage::KIND => lpeft_data::stage::CLI_FLAGS,
        _ => &[],
    }
}

fn init_logging(global: &GlobalArgs) {
    let level = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
