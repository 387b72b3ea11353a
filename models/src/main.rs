//! `strata`: train, evaluate and inspect the reference models.
#![forbid(unsafe_code)]

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::Value;
use strata_distributed::World;
use strata_models::models::RecurrentKind;
use strata_models::reference::{self, Model, PrivacyOptions, ResumeOptions, TrainOptions};
use strata_privacy::AccountantKind;

/// Train, evaluate and inspect strata's reference models on the data bundled with the repo.
#[derive(Parser)]
#[command(name = "strata", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// One value per process, parsed once: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Train a reference model; writes OUT/metrics.json, OUT/checkpoint/ and OUT/curves.svg.
    #[command(after_long_help = reference::defaults_help())]
    Train {
        /// The model (with --resume, taken from the checkpoint).
        #[arg(required_unless_present = "resume")]
        model: Option<Model>,
        #[arg(long, help = reference::epochs_help())]
        epochs: Option<usize>,
        /// Optimizer steps of the models that train in steps (default: the model's).
        #[arg(long)]
        steps: Option<usize>,
        /// Learning rate (default: the model's); the peak of the model's one-cycle schedule
        /// where it has one (see the defaults below).
        #[arg(long)]
        lr: Option<f64>,
        /// Samples per batch (default: the model's).
        #[arg(long)]
        batch_size: Option<usize>,
        /// Evaluate and save an exponential moving average of the weights with this decay
        /// (after a warm-up; default: the model's, 0 for none). Free under --dp: it is
        /// post-processing.
        #[arg(long, value_name = "DECAY")]
        ema: Option<f64>,
        /// The recurrent layer of char-rnn and forecast (default: lstm).
        #[arg(long)]
        cell: Option<RecurrentKind>,
        /// Seed of initialisation, splits and shuffling [default: 0].
        #[arg(long)]
        seed: Option<u64>,
        /// Worker threads (default: all cores, or RAYON_NUM_THREADS; at most 4 per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Output directory [default: a new folder runs/MODEL-N]. A folder that holds
        /// another run is refused unless --force.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace the run already in --out.
        #[arg(long)]
        force: bool,
        /// Continue the interrupted training in this run folder (an --out of `train`) from
        /// its last checkpoint, bit for bit, with the options it was started with.
        #[arg(long, value_name = "DIR")]
        resume: Option<PathBuf>,
        /// Write a checkpoint every N epochs (evaluation periods for the models that train
        /// in steps) [default: every one up to 50 epochs, a tenth of them beyond].
        #[arg(long, value_name = "N")]
        checkpoint_every: Option<usize>,
        /// Stop after N epochs (periods) in all, leaving a checkpoint that --resume
        /// continues.
        #[arg(long, value_name = "N")]
        stop_after: Option<usize>,
        /// Data to train on instead of the bundled set: a folder of IDX images (such as
        /// Fashion-MNIST) or CIFAR-10 binary batches for mlp and cnn, a UTF-8 text file for
        /// char-rnn and char-transformer.
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long, help = reference::datasets_help())]
        dataset: Option<String>,
        /// Train on only the first N samples (quick runs); for the character models, the
        /// first N characters of the text.
        #[arg(long)]
        limit: Option<usize>,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
        #[command(flatten)]
        dp: Box<DpArgs>,
    },
    /// Evaluate a checkpoint on the test split of the data it was trained on.
    Eval {
        /// The checkpoint directory (OUT/checkpoint of a training).
        checkpoint: PathBuf,
    },
    /// Predict with a checkpoint: one line per sample of INPUT (IDX images, or CSV rows of
    /// raw features).
    Predict {
        /// The checkpoint directory.
        checkpoint: PathBuf,
        /// The input file.
        input: PathBuf,
    },
    /// Sample text from a char-rnn or char-transformer checkpoint.
    Generate {
        /// The checkpoint directory.
        checkpoint: PathBuf,
        /// The text to continue (default: start of a line).
        #[arg(long, default_value = "")]
        prompt: String,
        /// Characters to generate (at most 1000000).
        #[arg(long, default_value_t = 400)]
        length: usize,
        /// Sampling temperature: lower is more conservative, 0 always takes the most
        /// likely character.
        #[arg(long, default_value_t = 0.8)]
        temperature: f64,
        /// Seed of the sampling.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Export a checkpoint to an ONNX model (opset 17, a dynamic batch dimension); inputs
    /// are preprocessed as in training (see the provenance record).
    Export {
        /// The checkpoint directory (OUT/checkpoint of a training).
        checkpoint: PathBuf,
        /// The .onnx file to write (written aside, then renamed into place).
        output: PathBuf,
    },
    /// Print a checkpoint's provenance record.
    Info {
        /// The checkpoint directory.
        checkpoint: PathBuf,
    },
}

/// Why the command stopped: an error to report, or a closed stdout (`strata info ck |
/// head -c 100`), after which a Unix tool exits quietly.
enum Failure {
    Error(String),
    ClosedStdout,
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Failure::Error(e)
    }
}

/// Writes `text` and a newline to stdout; a closed pipe is [`Failure::ClosedStdout`],
/// another failure (a full disk) an error.
fn out(text: &str) -> Result<(), Failure> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => Failure::ClosedStdout,
            _ => Failure::Error(format!("cannot write to stdout: {e}")),
        })
}

/// Writes a line to stderr, ignoring failures: a report about a failure must not fail.
fn err_line(text: &str) {
    let _ = writeln!(io::stderr().lock(), "{text}");
}

/// The most worker threads `--threads` takes: four per core.
fn max_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()) * 4
}

/// A folder `runs/MODEL-N` that does not exist yet (N from 1).
fn fresh_out(model: Model) -> PathBuf {
    let runs = Path::new("runs");
    (1..)
        .map(|n| runs.join(format!("{}-{n}", model.name())))
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or_else(|| runs.join(model.name()))
}

/// The options `train --resume` cannot take (they come from the checkpoint), by name,
/// when given.
fn changed_on_resume(given: &[(&'static str, bool)]) -> Result<(), Failure> {
    let named: Vec<&str> = given.iter().filter(|(_, g)| *g).map(|(n, _)| *n).collect();
    if named.is_empty() {
        return Ok(());
    }
    Err(Failure::Error(format!(
        "{} cannot be given with --resume: a resumed training continues with the options in \
         its checkpoint",
        named.join(", ")
    )))
}

/// Differentially private training (DP-SGD with Poisson sampling).
#[derive(clap::Args)]
struct DpArgs {
    /// Train with differential privacy: per-sample clipping, Gaussian noise, Poisson
    /// batches of the expected --batch-size; the guarantee goes into the checkpoint's
    /// provenance record and ε per epoch into metrics.json.
    #[arg(long)]
    dp: bool,
    /// The ε to spend over the whole run (the noise multiplier is solved for it).
    #[arg(long, requires = "dp", conflicts_with = "noise_multiplier")]
    epsilon: Option<f64>,
    /// The δ of the guarantee.
    #[arg(long, requires = "dp", default_value_t = 1e-5)]
    delta: f64,
    /// C: each sample's gradient is clipped to this norm.
    #[arg(long, requires = "dp", default_value_t = 1.0)]
    max_grad_norm: f64,
    /// σ: the noise's standard deviation over C (instead of --epsilon; ε is reported).
    #[arg(long, requires = "dp")]
    noise_multiplier: Option<f64>,
    /// The accountant: prv (numerical composition, tighter; Opacus's default) or rdp.
    #[arg(long, requires = "dp", default_value = "prv", value_parser = ["prv", "rdp"])]
    accountant: String,
    /// Noise and sampling from --seed instead of the operating system: the run repeats
    /// exactly, and is recorded as NOT private.
    #[arg(long, requires = "dp")]
    seeded_noise: bool,
}

impl DpArgs {
    fn options(&self) -> Result<Option<PrivacyOptions>, String> {
        if !self.dp {
            return Ok(None);
        }
        if self.epsilon.is_none() && self.noise_multiplier.is_none() {
            return Err("--dp needs --epsilon (a target) or --noise-multiplier".into());
        }
        Ok(Some(PrivacyOptions {
            epsilon: self.epsilon,
            delta: self.delta,
            max_grad_norm: self.max_grad_norm,
            noise_multiplier: self.noise_multiplier,
            accountant: if self.accountant == "rdp" {
                AccountantKind::Rdp
            } else {
                AccountantKind::Prv
            },
            seeded_noise: self.seeded_noise,
        }))
    }
}

/// A debug build trains several times slower than a release build: say so, once, to a
/// user at a terminal (not to scripts and tests, whose stderr is a pipe).
fn warn_if_debug_build() {
    if cfg!(debug_assertions) && std::io::stderr().is_terminal() {
        eprintln!(
            "note: this strata is a debug build, which trains several times slower; build \
             with --release (cargo run --release -p strata-models -- ...)"
        );
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    if matches!(cli.command, Command::Train { .. }) {
        warn_if_debug_build();
    }
    match cli.command {
        Command::Train {
            model,
            epochs,
            steps,
            lr,
            batch_size,
            ema,
            cell,
            seed,
            threads,
            out: out_dir,
            force,
            resume,
            checkpoint_every,
            stop_after,
            data,
            dataset,
            limit,
            quiet,
            dp,
        } => {
            // Under an MPI launcher, this process is one rank of several (data-parallel);
            // alone, a world of one and MPI untouched.
            let world = World::init().map_err(|e| e.to_string())?;
            world.abort_on_panic();
            // Ranks that share a machine share its cores, unless --threads says otherwise.
            let local_ranks = world.launch().and_then(|l| l.local_size).unwrap_or(1);
            let threads = threads.or_else(|| {
                (local_ranks > 1).then(|| {
                    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                    (cores / local_ranks).max(1)
                })
            });
            if let Some(n) = threads {
                let max = max_threads();
                if n == 0 || n > max {
                    return Err(Failure::Error(format!(
                        "--threads {n}: give between 1 and {max} (four per core)"
                    )));
                }
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build_global()
                    .map_err(|e| format!("--threads {n}: {e}"))?;
            }
            let result = if let Some(dir) = resume {
                changed_on_resume(&[
                    ("a model", model.is_some()),
                    ("--epochs", epochs.is_some()),
                    ("--steps", steps.is_some()),
                    ("--lr", lr.is_some()),
                    ("--batch-size", batch_size.is_some()),
                    ("--ema", ema.is_some()),
                    ("--cell", cell.is_some()),
                    ("--seed", seed.is_some()),
                    ("--out", out_dir.is_some()),
                    ("--force", force),
                    ("--data", data.is_some()),
                    ("--dataset", dataset.is_some()),
                    ("--limit", limit.is_some()),
                    ("--dp", dp.dp),
                ])?;
                let how = ResumeOptions {
                    progress: !quiet,
                    stop_after,
                    checkpoint_every,
                    comm: world.comm().clone(),
                };
                reference::resume(&dir, &how).map(|metrics| (metrics, dir))
            } else {
                let model = model.ok_or_else(|| "give a model to train".to_string())?;
                let out_dir = out_dir.unwrap_or_else(|| fresh_out(model));
                let opts = TrainOptions {
                    model,
                    epochs,
                    steps,
                    lr,
                    batch_size,
                    cell,
                    seed: seed.unwrap_or(0),
                    out: out_dir.clone(),
                    data,
                    dataset,
                    limit,
                    progress: !quiet,
                    force,
                    checkpoint_every,
                    stop_after,
                    comm: world.comm().clone(),
                    privacy: dp.options()?,
                    ema,
                };
                reference::train(&opts).map(|metrics| (metrics, out_dir))
            };
            let (metrics, written) = match result {
                Ok(done) => done,
                // One rank's error ends every rank, rather than leave them waiting for it.
                Err(e) if world.size() > 1 => world.fail(&one_line(&e.to_string()), 1),
                Err(e) => return Err(Failure::Error(e.to_string())),
            };
            if world.rank() != 0 {
                return Ok(());
            }
            if let Some(Value::Array(errors)) = metrics.get("report_errors") {
                for e in errors {
                    err_line(&format!(
                        "warning: {} (the trained model is saved)",
                        e.as_str().unwrap_or_default()
                    ));
                }
            }
            out(&serde_json::to_string_pretty(&metrics).map_err(|e| e.to_string())?)?;
            let w = written.display();
            let ranks = if world.size() > 1 {
                format!(" ({} ranks)", world.size())
            } else {
                String::new()
            };
            match metrics.get("stopped_after") {
                Some(done) => err_line(&format!(
                    "stopped after {done} of {} epochs; wrote {w}/checkpoint/{ranks}; continue \
                     with `strata train --resume {w}`",
                    metrics.get("of").unwrap_or(&Value::Null)
                )),
                None => err_line(&format!(
                    "wrote {w}/metrics.json, {w}/checkpoint/, {w}/curves.svg{ranks}"
                )),
            }
        }
        Command::Eval { checkpoint } => {
            let e = reference::eval(&checkpoint).map_err(|e| e.to_string())?;
            // Small losses (a PDE residual, a near-perfect regression) keep their digits.
            let mut line = if e.loss != 0.0 && e.loss.abs() < 1e-3 {
                format!("test loss {:.4e}", e.loss)
            } else {
                format!("test loss {:.6}", e.loss)
            };
            if let Some(a) = e.accuracy {
                line += &format!(", test accuracy {:.4}", a);
            }
            if let Some(r2) = e.r2 {
                line += &format!(", test R² {:.4}", r2);
            }
            out(&line)?;
        }
        Command::Predict { checkpoint, input } => {
            for p in reference::predict(&checkpoint, &input).map_err(|e| e.to_string())? {
                out(&p)?;
            }
        }
        Command::Generate {
            checkpoint,
            prompt,
            length,
            temperature,
            seed,
        } => out(
            &reference::generate(&checkpoint, &prompt, length, temperature, seed)
                .map_err(|e| e.to_string())?,
        )?,
        Command::Export { checkpoint, output } => {
            let exported = reference::export(&checkpoint, &output).map_err(|e| e.to_string())?;
            let initializers = exported
                .model
                .graph
                .as_ref()
                .map(|g| g.initializer.len())
                .unwrap_or(0);
            out(&format!(
                "wrote {} (ONNX opset {}, {initializers} initializers): {}",
                output.display(),
                strata_onnx::OPSET,
                exported.signature()
            ))?;
            // What the file computes, when a model states it (seq2seq: the teacher-forced
            // forward, not its decoding loop).
            if let Some((_, what)) = exported.model.doc_string.split_once(": ") {
                out(&format!("the file computes {what}"))?
            }
        }
        Command::Info { checkpoint } => {
            out(&reference::info(&checkpoint).map_err(|e| e.to_string())?)?
        }
    }
    Ok(())
}

/// One line, even for messages that span several (e.g. a state dict mismatch).
fn one_line(e: &str) -> String {
    let line: Vec<&str> = e.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    line.join(" ")
}

fn main() -> ExitCode {
    // A network that a checkpoint's record asks to be too large stops with a panic that
    // `with_allocation_limit` catches and turns into an error: it is not a crash, and
    // prints nothing here.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info
            .payload()
            .is::<strata_tensor::AllocationLimitExceeded>()
        {
            default_hook(info);
        }
    }));
    match run(Cli::parse()) {
        Ok(()) | Err(Failure::ClosedStdout) => ExitCode::SUCCESS,
        Err(Failure::Error(e)) => {
            err_line(&format!("error: {}", one_line(&e)));
            ExitCode::FAILURE
        }
    }
}
