//! `strata`: train, evaluate and inspect the reference models.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata_distributed::World;
use strata_models::models::RecurrentKind;
use strata_models::reference::{self, Model, PrivacyOptions, TrainOptions};
use strata_privacy::AccountantKind;

/// Train, evaluate and inspect strata's reference models on the data bundled with the repo.
#[derive(Parser)]
#[command(name = "strata", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a reference model; writes OUT/metrics.json, OUT/checkpoint/ and OUT/curves.svg.
    #[command(after_long_help = reference::defaults_help())]
    Train {
        /// The model.
        model: Model,
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
        /// The recurrent layer of char-rnn and forecast (default: lstm).
        #[arg(long)]
        cell: Option<RecurrentKind>,
        /// Seed of initialisation, splits and shuffling.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Worker threads (default: all cores, or RAYON_NUM_THREADS).
        #[arg(long)]
        threads: Option<usize>,
        /// Output directory.
        #[arg(long, default_value = "runs/latest")]
        out: PathBuf,
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
        /// Characters to generate.
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
    /// Print a checkpoint's provenance record.
    Info {
        /// The checkpoint directory.
        checkpoint: PathBuf,
    },
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

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Train {
            model,
            epochs,
            steps,
            lr,
            batch_size,
            cell,
            seed,
            threads,
            out,
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
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build_global()
                    .map_err(|e| format!("--threads {n}: {e}"))?;
            }
            let opts = TrainOptions {
                model,
                epochs,
                steps,
                lr,
                batch_size,
                cell,
                seed,
                out: out.clone(),
                data,
                dataset,
                limit,
                progress: !quiet,
                comm: world.comm().clone(),
                privacy: dp.options()?,
            };
            let metrics = match reference::train(&opts) {
                Ok(m) => m,
                // One rank's error ends every rank, rather than leave them waiting for it.
                Err(e) if world.size() > 1 => world.fail(&one_line(&e.to_string()), 1),
                Err(e) => return Err(e.to_string()),
            };
            if world.rank() == 0 {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&metrics).expect("plain JSON")
                );
                eprintln!(
                    "wrote {}/metrics.json, {}/checkpoint/, {}/curves.svg{}",
                    out.display(),
                    out.display(),
                    out.display(),
                    if world.size() > 1 {
                        format!(" ({} ranks)", world.size())
                    } else {
                        String::new()
                    }
                );
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
            println!("{line}");
        }
        Command::Predict { checkpoint, input } => {
            for p in reference::predict(&checkpoint, &input).map_err(|e| e.to_string())? {
                println!("{p}");
            }
        }
        Command::Generate {
            checkpoint,
            prompt,
            length,
            temperature,
            seed,
        } => println!(
            "{}",
            reference::generate(&checkpoint, &prompt, length, temperature, seed)
                .map_err(|e| e.to_string())?
        ),
        Command::Info { checkpoint } => println!(
            "{}",
            reference::info(&checkpoint).map_err(|e| e.to_string())?
        ),
    }
    Ok(())
}

/// One line, even for messages that span several (e.g. a state dict mismatch).
fn one_line(e: &str) -> String {
    let line: Vec<&str> = e.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    line.join(" ")
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}
