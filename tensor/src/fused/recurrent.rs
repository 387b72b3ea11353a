//! Fused recurrent kernels (RNN, LSTM, GRU over a whole sequence) and their backward.
//!
//! A recurrent layer spends its time in `L` small, dependent products `h_{t-1}·W_hhᵀ`, one
//! per step. Built from generic ops it becomes a graph of ~10 nodes per step, each
//! allocating and each walked again by backward; here a whole layer (one direction) is
//! one forward call and one backward call:
//!
//! - Both walks go a chunk of `S ≈ 256 / N` steps at a time, so that what lies between
//!   the big products stays in cache. The input projection of a chunk is one GEMM,
//!   `[S·N, in] × W_ihᵀ`.
//! - Each step splits into tiles of (batch rows × hidden units). A tile multiplies its rows
//!   of `h_{t-1}` by the columns of `W_hhᵀ` that feed its units (packed once per call, all
//!   gates of a unit side by side; for f32 on AVX-512 into the panels of this crate's own
//!   small-product kernel, see `panels`), then applies the gate nonlinearities to the
//!   result while it is still in cache. Tiles of one step run in parallel (one task per
//!   thread walks a chunk's steps, each keeping its own tiles, see `walk_tiles`); a tile's
//!   product starts with the part of `h_{t-1}` it made itself and waits for the other
//!   tiles' parts only when it reaches them, so there is no barrier between steps. Tile
//!   bounds and the order of each product depend only on the sizes, so results do not
//!   depend on the thread count.
//! - Backward walks the steps in reverse, per tile: `∂h` for its units from the next
//!   step's gate gradients times `W_hh`, then the gate gradients. After each chunk,
//!   `∂W_hh`, `∂W_ih`, the biases and `∂x` get the chunk's share in one GEMM (or column
//!   sum) each.
//!
//! The reverse direction of a bidirectional layer walks time backwards inside the kernel;
//! nothing is flipped or copied.
//!
//! # Glossary
//!
//! - **L, N, in, H, G**: sequence length, batch size, input features, hidden units, gates
//!   (1 for RNN, 4 for LSTM `i, f, g, o`, 3 for GRU `r, z, n`); [`RecurrentShape`] holds them.
//! - **step** `s`: the `s`-th step the walk takes; its **time** `t = time(s, reverse)` is
//!   the position in the sequence (`L − 1 − s` walking backwards).
//! - **chunk**: `S` consecutive steps (`chunks`), so that `S·N ≈ 256` rows; the input
//!   projection (forward) and the weight gradients (backward) run once per chunk.
//! - **unit block** `b`: the hidden units `u0..u0 + un` a tile owns (`unit_blocks`); the
//!   weights are packed per block, all gates of a unit side by side (`gate_col`).
//! - **tile**: one block of a step's work, batch rows `r0..r0 + rn` × units `u0..u0 + un`,
//!   with its own scratch (`Tile`); tiles of one step are independent.
//! - **lane**: one task of the walk's scheduler (`walk_tiles`), one per thread; it owns a
//!   share of the tiles and takes unclaimed ones; lanes run concurrently (`par::lanes`).
//! - **tile state** in `walk_tiles`: tile `k` is free for step `i` at `2i`, claimed at
//!   `2i + 1`, done at `2i + 2`; per step and unit block a count of done tiles lets a tile
//!   of the next step **wait** (`Wait`) for exactly the columns it reads.
//! - **saved arrays**: activations and cells kept for the backward, stored tile by tile
//!   (`saved_at`); **packed output**: `[L, N, H]` hidden states, plus `c_n` for the LSTM.
//! - **panels**: weights packed for the AVX-512 f32 kernel (`panels::StepWeights`),
//!   `MR × NR` microkernel tiles; faer serves f64 and other CPUs.

mod backward;
mod forward;
mod gates;
mod panels;
#[cfg(test)]
mod tests;

use crate::engine::par::{self, Disjoint};
use crate::handle::storage::Buffer;
use crate::{Element, Result, Tensor, TensorError};

/// Which recurrence a fused sequence kernel runs; the gate order of the weights is
/// PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecurrentMode {
    /// Elman RNN, `h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`.
    RnnTanh,
    /// Elman RNN with ReLU, `h' = relu(W_ih x + b_ih + W_hh h + b_hh)`.
    RnnRelu,
    /// LSTM, gates `i, f, g, o`: `c' = f ⊙ c + i ⊙ g`, `h' = o ⊙ tanh(c')`.
    Lstm,
    /// GRU, gates `r, z, n`: `n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))`,
    /// `h' = (1 − z) ⊙ n + z ⊙ h`.
    Gru,
}

impl RecurrentMode {
    /// The number of gates `G`: the weights have `G·H` rows.
    pub fn gates(self) -> usize {
        match self {
            RecurrentMode::RnnTanh | RecurrentMode::RnnRelu => 1,
            RecurrentMode::Lstm => 4,
            RecurrentMode::Gru => 3,
        }
    }

    /// The op's name, as PyTorch's `mode` string (`"RNN_TANH"` → `"rnn_tanh"`).
    pub fn name(self) -> &'static str {
        match self {
            RecurrentMode::RnnTanh => "rnn_tanh",
            RecurrentMode::RnnRelu => "rnn_relu",
            RecurrentMode::Lstm => "lstm",
            RecurrentMode::Gru => "gru",
        }
    }
}

/// The parameters of one layer and direction, in PyTorch's layouts: `w_ih` `[G·H, in]`,
/// `w_hh` `[G·H, H]`, `b_ih` and `b_hh` `[G·H]`.
#[derive(Clone, Copy, Debug)]
pub struct RecurrentWeights<'a, T: Element> {
    /// The input-to-hidden weight `[G·H, in]`.
    pub w_ih: &'a Tensor<T>,
    /// The hidden-to-hidden weight `[G·H, H]`.
    pub w_hh: &'a Tensor<T>,
    /// The input-to-hidden bias `[G·H]`.
    pub b_ih: Option<&'a Tensor<T>>,
    /// The hidden-to-hidden bias `[G·H]`.
    pub b_hh: Option<&'a Tensor<T>>,
}

/// What [`Tensor::recurrent_sequence`] saves for its backward: the inputs and the gate
/// activations of every step.
#[derive(Clone, Debug)]
pub struct RecurrentSaved<T: Element> {
    mode: RecurrentMode,
    reverse: bool,
    dims: RecurrentShape,
    x: Tensor<T>,
    w_ih: Tensor<T>,
    w_hh: Tensor<T>,
    has_b_ih: bool,
    has_b_hh: bool,
    h0: Option<Tensor<T>>,
    c0: Option<Tensor<T>>,
    /// The packed output (see [`Tensor::recurrent_sequence`]).
    out: Tensor<T>,
    /// Per step, row and unit: LSTM `i, f, g, o`; GRU `r, z, n, W_hn h + b_hn`
    /// (`[L, N, 4H]`, blocked by tile, see `saved_at`; in a tile's row the four arrays
    /// side by side).
    acts: Option<Tensor<T>>,
    /// LSTM: `c_t` and `tanh(c_t)` of every step (`[L, N, H]` each, blocked by tile).
    cells: Option<(Tensor<T>, Tensor<T>)>,
}

/// Which gradients [`Tensor::recurrent_sequence_backward`] computes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecurrentGradNeeds {
    /// The input sequence.
    pub x: bool,
    /// `w_ih`.
    pub w_ih: bool,
    /// `w_hh`.
    pub w_hh: bool,
    /// `b_ih`.
    pub b_ih: bool,
    /// `b_hh`.
    pub b_hh: bool,
    /// The initial hidden state.
    pub h0: bool,
    /// The initial cell state (LSTM).
    pub c0: bool,
    /// The gradients of every step's gate pre-activations, input side and hidden side
    /// (what per-sample weight gradients are made of; see [`RecurrentGrads::gates_ih`]).
    pub gates: bool,
}

/// The gradients [`Tensor::recurrent_sequence_backward`] returns, `None` where not
/// asked for (or where the input was absent).
#[derive(Clone, Debug, Default)]
pub struct RecurrentGrads<T: Element> {
    /// `[L, N, in]`.
    pub x: Option<Tensor<T>>,
    /// `[G·H, in]`.
    pub w_ih: Option<Tensor<T>>,
    /// `[G·H, H]`.
    pub w_hh: Option<Tensor<T>>,
    /// `[G·H]`.
    pub b_ih: Option<Tensor<T>>,
    /// `[G·H]`.
    pub b_hh: Option<Tensor<T>>,
    /// `[N, H]`.
    pub h0: Option<Tensor<T>>,
    /// `[N, H]`.
    pub c0: Option<Tensor<T>>,
    /// The gradients of the input side's pre-activations `x_t·W_ihᵀ + b_ih` at every
    /// step, `[L, N, G·H]` in PyTorch's gate order (time order, whatever the direction):
    /// `∂W_ih = Σ_t gates_ih[t]ᵀ·x_t`.
    pub gates_ih: Option<Tensor<T>>,
    /// The same for the hidden side's `h_{t−1}·W_hhᵀ + b_hh`: `∂W_hh = Σ_t
    /// gates_hh[t]ᵀ·h_{t−1}`. Equal to `gates_ih` but for the GRU's n gate, where the
    /// hidden side's product is scaled by the reset gate.
    pub gates_hh: Option<Tensor<T>>,
}

/// The sizes of one recurrent problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RecurrentShape {
    /// Sequence length.
    l: usize,
    /// Batch size.
    n: usize,
    /// Input features.
    input: usize,
    /// Hidden size.
    h: usize,
    /// Gates.
    g: usize,
}

impl RecurrentShape {
    fn gh(&self) -> usize {
        self.g * self.h
    }

    fn ln(&self) -> usize {
        self.l * self.n
    }

    /// Rows of the packed output: `L` hidden states, plus `c_n` for the LSTM.
    fn out_steps(&self, mode: RecurrentMode) -> usize {
        self.l + usize::from(mode == RecurrentMode::Lstm)
    }

    /// The time index of the `s`-th step the forward pass takes.
    fn time(&self, s: usize, reverse: bool) -> usize {
        if reverse { self.l - 1 - s } else { s }
    }

    /// The position of gate `gate` of unit `j` in the tile-major order of the gates that
    /// the kernels use inside (weights packed per tile, activations, gate gradients): unit
    /// block by unit block, and within a block gate by gate, so that a tile's gates sit
    /// side by side.
    fn gate_col(&self, blocks: &[(usize, usize)], gate: usize, j: usize) -> usize {
        let &(u0, un) = blocks
            .iter()
            .find(|&&(u0, un)| (u0..u0 + un).contains(&j))
            .expect("the blocks cover the units");
        self.g * u0 + gate * un + (j - u0)
    }

    /// The first time index of the chunk of `len` steps that starts at step `c0`: chunks
    /// cover contiguous time ranges, walked forwards or backwards.
    fn chunk_start(&self, c0: usize, len: usize, reverse: bool) -> usize {
        if reverse { self.l - c0 - len } else { c0 }
    }
}

impl<T: Element> Tensor<T> {
    /// Runs one layer and direction of an RNN, LSTM or GRU over the whole sequence `self`
    /// `[L, N, in]` (time-major), from the initial states `h0` (and, for the LSTM, `c0`),
    /// each `[N, H]` (zeros when `None`), walking time backwards when `reverse`.
    ///
    /// Returns the packed output and, when `save`, what the backward needs. The packed
    /// output is `[L, N, H]`, the hidden state of every time step (in time order, whatever
    /// the direction), so `h_n` is row `L − 1` (row `0` when `reverse`); for the LSTM it
    /// is `[L + 1, N, H]` with `c_n` in row `L`.
    ///
    /// ```
    /// use strata_tensor::{RecurrentMode, RecurrentWeights, Tensor};
    ///
    /// // A 1-unit tanh RNN that adds its input to half its state: h' = tanh(x + h/2).
    /// let x = Tensor::from_vec(vec![1.0f64, 0.0, -1.0], &[3, 1, 1])?;
    /// let (w_ih, w_hh) = (Tensor::ones(&[1, 1]), Tensor::full(&[1, 1], 0.5));
    /// let weights = RecurrentWeights { w_ih: &w_ih, w_hh: &w_hh, b_ih: None, b_hh: None };
    /// let (out, _) = x.recurrent_sequence(RecurrentMode::RnnTanh, weights, None, None, false, false)?;
    /// let h1 = 1f64.tanh();
    /// let h2 = (h1 / 2.0).tanh();
    /// assert_eq!(out.to_vec(), vec![h1, h2, (h2 / 2.0 - 1.0).tanh()]);
    /// # Ok::<(), strata_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::Shape`] when `self` is not 3-d with `L > 0`, or the weights, biases
    /// or states do not fit it; [`TensorError::Invalid`] for `c0` outside the LSTM.
    pub fn recurrent_sequence(
        &self,
        mode: RecurrentMode,
        weights: RecurrentWeights<'_, T>,
        h0: Option<&Tensor<T>>,
        c0: Option<&Tensor<T>>,
        reverse: bool,
        save: bool,
    ) -> Result<(Tensor<T>, Option<RecurrentSaved<T>>)> {
        let dims = check(self, mode, &weights, h0, c0)?;
        let x = self.contiguous();
        let w_ih = weights.w_ih.contiguous();
        let w_hh = weights.w_hh.contiguous();
        let (b_ih, b_hh) = (
            weights.b_ih.map(Tensor::contiguous),
            weights.b_hh.map(Tensor::contiguous),
        );
        let (h0, c0) = (h0.map(Tensor::contiguous), c0.map(Tensor::contiguous));
        fn slice<T: Element>(t: &Tensor<T>) -> &[T] {
            t.as_slice().expect("contiguous")
        }
        let inputs = forward::Inputs {
            x: slice(&x),
            w_ih: slice(&w_ih),
            w_hh: slice(&w_hh),
            b_ih: b_ih.as_ref().map(slice),
            b_hh: b_hh.as_ref().map(slice),
            h0: h0.as_ref().map(slice),
            c0: c0.as_ref().map(slice),
        };
        let result = par::in_pool(|| forward::run(mode, dims, inputs, reverse, save));
        let out = Tensor::from_contiguous(result.out, &[dims.out_steps(mode), dims.n, dims.h]);
        let saved = save.then(|| RecurrentSaved {
            mode,
            reverse,
            dims,
            x,
            w_ih,
            w_hh,
            has_b_ih: b_ih.is_some(),
            has_b_hh: b_hh.is_some(),
            h0,
            c0,
            out: out.clone(),
            acts: result
                .acts
                .map(|a| Tensor::from_contiguous(a, &[dims.l, dims.n, 4 * dims.h])),
            cells: result.cells.map(|(c, tc)| {
                let shape = [dims.l, dims.n, dims.h];
                (
                    Tensor::from_contiguous(c, &shape),
                    Tensor::from_contiguous(tc, &shape),
                )
            }),
        });
        Ok((out, saved))
    }

    /// The gradients of [`recurrent_sequence`](Tensor::recurrent_sequence) given the
    /// gradient `grad` of its packed output, for the inputs `needs` asks for.
    ///
    /// # Errors
    /// [`TensorError::Shape`] when `grad` does not have the packed output's shape.
    #[doc(hidden)]
    pub fn recurrent_sequence_backward(
        grad: &Tensor<T>,
        saved: &RecurrentSaved<T>,
        needs: RecurrentGradNeeds,
    ) -> Result<RecurrentGrads<T>> {
        if grad.shape() != saved.out.shape() {
            return Err(TensorError::shape(
                saved.mode.name(),
                format!(
                    "the output gradient has shape {:?}, the output {:?}",
                    grad.shape(),
                    saved.out.shape()
                ),
            ));
        }
        let grad = grad.contiguous();
        let grad = grad.as_slice().expect("contiguous");
        Ok(par::in_pool(|| backward::run(saved, grad, needs)))
    }
}

/// Validates the shapes of a [`Tensor::recurrent_sequence`] call.
fn check<T: Element>(
    x: &Tensor<T>,
    mode: RecurrentMode,
    w: &RecurrentWeights<'_, T>,
    h0: Option<&Tensor<T>>,
    c0: Option<&Tensor<T>>,
) -> Result<RecurrentShape> {
    let op = mode.name();
    let fail = |msg: String| Err(TensorError::shape(op, msg));
    let &[l, n, input] = x.shape() else {
        return fail(format!("the input must be [L, N, in], got {:?}", x.shape()));
    };
    if l == 0 {
        return fail(format!(
            "the sequence must not be empty, got input {:?}",
            x.shape()
        ));
    }
    let g = mode.gates();
    let &[gh, h] = w.w_hh.shape() else {
        return fail(format!("w_hh must be [G*H, H], got {:?}", w.w_hh.shape()));
    };
    if g.checked_mul(h) != Some(gh) {
        return fail(format!(
            "w_hh must be [{g}*H, H] for {op}, got {:?}",
            w.w_hh.shape()
        ));
    }
    if w.w_ih.shape() != [gh, input] {
        return fail(format!(
            "w_ih must be [{gh}, {input}] for input {:?}, got {:?}",
            x.shape(),
            w.w_ih.shape()
        ));
    }
    for b in [w.b_ih, w.b_hh].into_iter().flatten() {
        if b.shape() != [gh] {
            return fail(format!("the biases must be [{gh}], got {:?}", b.shape()));
        }
    }
    for s in [h0, c0].into_iter().flatten() {
        if s.shape() != [n, h] {
            return fail(format!(
                "the initial states must be [{n}, {h}] for input {:?}, got {:?}",
                x.shape(),
                s.shape()
            ));
        }
    }
    if c0.is_some() && mode != RecurrentMode::Lstm {
        return Err(TensorError::invalid(op, "only the LSTM has a cell state"));
    }
    // The saved gates `[L, N, G·H]` are the largest buffer of a call: countable and
    // allocatable, or an error before any kernel indexes them (expanded weights or inputs
    // can claim sizes no memory holds). Counted as f64, the larger element.
    crate::handle::layout::check_shape::<f64>(op, &[l, n, gh])?;
    Ok(RecurrentShape { l, n, input, h, g })
}

/// Whether `T` is f32 and this CPU has AVX-512: where the walks use their hand-written
/// kernels (`panels`, `gates::lstm_tile_avx512`).
fn f32_avx512<T: Element>() -> bool {
    T::DTYPE == crate::DType::F32 && crate::simd_level() == "avx512"
}

/// Rows (steps × batch) per chunk: the walks project the inputs, and backward computes
/// the weight gradients, this many rows at a time, so that the buffers in between stay
/// in cache.
const CHUNK_ROWS: usize = 256;

/// `(steps per chunk, number of chunks)`.
fn chunks(d: &RecurrentShape) -> (usize, usize) {
    let steps = (CHUNK_ROWS / d.n.max(1)).clamp(1, d.l);
    (steps, d.l.div_ceil(steps))
}

/// Batch rows per tile once a step is worth splitting.
const ROWS_PER_TILE: usize = 64;
/// Hidden units per tile once a step is worth splitting.
const UNITS_PER_TILE: usize = 64;

/// A block of one step's work: batch rows `r0..r0 + rn`, hidden units `u0..u0 + un`, with
/// its own scratch buffers.
struct Tile<T> {
    /// The index of the tile's unit block (see `unit_blocks`).
    b: usize,
    r0: usize,
    rn: usize,
    u0: usize,
    un: usize,
    /// The tile's product with `W_hh` (forward `[rn, G·un]`, backward `[rn, un]`).
    prod: Buffer<T>,
    /// Per-unit state carried from step to step, `[2, rn, un]` (forward: the LSTM's `c`
    /// when nothing is saved, its two halves taking turns as `c_{t-1}` and `c_t`; backward:
    /// the gradient of `c`, in the first half).
    state: Buffer<T>,
    /// More per-step scratch, `[rn, 5·un]` (forward: activations not saved; backward: gate
    /// gradients).
    scratch: Buffer<T>,
    /// Backward: the part of `∂h_{t-1}` that does not go through `W_hh` (GRU's `z ⊙ ∂h`).
    carry: Buffer<T>,
}

/// Splits a step into tiles. Small steps are one tile; the split depends only on the
/// sizes, never on the thread count, so results are the same on any machine.
fn tiles<T: Element>(d: &RecurrentShape) -> Vec<Tile<T>> {
    let step_macs = d.n * d.gh() * d.h;
    let (rows, units) = if step_macs < crate::engine::gemm::PAR_MIN_MACS {
        (d.n.max(1), d.h.max(1))
    } else {
        (ROWS_PER_TILE.min(d.n), UNITS_PER_TILE.min(d.h))
    };
    let mut out = Vec::new();
    for (b, u0) in (0..d.h).step_by(units).enumerate() {
        for r0 in (0..d.n).step_by(rows) {
            let (rn, un) = (rows.min(d.n - r0), units.min(d.h - u0));
            out.push(Tile {
                b,
                r0,
                rn,
                u0,
                un,
                prod: vec![T::zero(); rn * d.g * un].into(),
                state: vec![T::zero(); 2 * rn * un].into(),
                scratch: vec![T::zero(); rn * 5 * un].into(),
                carry: vec![T::zero(); rn * un].into(),
            });
        }
    }
    out
}

/// Where row `r` of the tile `(r0, rn, u0, un)` starts at step `t` in a saved array of `w`
/// values per unit (activations, cells): each step's `[N, H]` is stored tile by tile, a
/// tile's rows one after another, so that a tile reads and writes one contiguous run per
/// step instead of a short segment of every row (which the prefetchers do not follow
/// across rows `H·w` apart). Forward and backward tile the same way.
fn saved_at(
    d: &RecurrentShape,
    (r0, rn, u0, un): (usize, usize, usize, usize),
    t: usize,
    r: usize,
    w: usize,
) -> usize {
    (t * d.n * d.h + r0 * d.h + rn * u0 + r * un) * w
}

/// The unit blocks `(u0, un)` of a tiling, in order.
fn unit_blocks<T>(tiles: &[Tile<T>]) -> Vec<(usize, usize)> {
    tiles
        .iter()
        .filter(|t| t.r0 == 0)
        .map(|t| (t.u0, t.un))
        .collect()
}

/// Lets a tile wait, in the middle of its step, for the unit blocks of the step before
/// (see `walk_tiles`).
pub(super) struct Wait<'a> {
    /// Per unit block: tiles of the step before that are done (`None`: all are).
    done: Option<&'a [std::sync::atomic::AtomicUsize]>,
    /// Per unit block: its number of tiles.
    need: &'a [usize],
    failed: &'a std::sync::atomic::AtomicBool,
}

impl Wait<'_> {
    /// Returns once every tile of unit block `b` of the step before is done.
    ///
    /// # Panics
    /// When another tile of the walk panicked (the walk is then lost anyway).
    pub(super) fn block(&self, b: usize) {
        use std::sync::atomic::Ordering;
        let Some(done) = self.done else { return };
        let mut spins = 0u32;
        while done[b].load(Ordering::Acquire) < self.need[b] {
            assert!(
                !self.failed.load(Ordering::Acquire),
                "another tile of the recurrent walk panicked"
            );
            // Spin (a step's tiles finish within microseconds of each other), but give
            // the core away if the other tasks' threads are not running.
            spins = spins.saturating_add(1);
            if spins < 1 << 14 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Returns once the unit blocks covering columns `k0..k1` of the step before are done,
    /// block `b` covering `[w·u0, w·(u0 + un))` for `blocks[b] = (u0, un)`.
    pub(super) fn columns(&self, blocks: &[(usize, usize)], w: usize, (k0, k1): (usize, usize)) {
        for (b, &(u0, un)) in blocks.iter().enumerate() {
            if w * u0 < k1 && k0 < w * (u0 + un) {
                self.block(b);
            }
        }
    }
}

/// Runs `f(tile, s, wait)` for every tile at each step `s` of `steps`, one step after
/// another: a tile's step `s` reads the results of every unit block of step `s − 1`, but
/// only as far as `wait` lets it, so it may start before that step is complete (its
/// product over `k` starts with the columns it made itself, see `StepWeights::gemm`).
///
/// One task per thread walks all the steps (one fork-join per call instead of one per
/// step). Task `i` owns a contiguous share of the tiles and runs those first at every
/// step, so a tile, and the block of the weights it reads, stays with one core; then it
/// takes any tile of the step nobody has claimed yet, and moves on to the next step
/// without waiting. A tile is claimed for step `i` only once it has finished step
/// `i − 1`, and a task waits (inside `f`) only for tiles of the step before its own,
/// each claimed by a running task or about to be claimed by the running task that
/// finished its step before; so if the pool's other threads are busy elsewhere the
/// caller does all the tiles itself. Which thread runs a tile does not change its result.
fn walk_tiles<T: Element>(
    tiles: &mut [Tile<T>],
    steps: impl Iterator<Item = usize>,
    f: impl Fn(&mut Tile<T>, usize, &Wait<'_>) + Sync,
) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let n = tiles.len();
    let blocks = tiles.iter().map(|t| t.b + 1).max().unwrap_or(0);
    let mut need = vec![0; blocks];
    for tile in tiles.iter() {
        need[tile.b] += 1;
    }
    let failed = AtomicBool::new(false);
    let lanes = par::threads().min(n);
    if lanes < 2 {
        let wait = Wait {
            done: None,
            need: &need,
            failed: &failed,
        };
        for s in steps {
            tiles.iter_mut().for_each(|tile| f(tile, s, &wait));
        }
        return;
    }
    let steps: Vec<usize> = steps.collect();
    // Tile k is free for step i at 2i, claimed for it at 2i + 1, done with it at 2i + 2.
    let state: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
    // Per step and unit block, the tiles done.
    let done: Vec<AtomicUsize> = (0..steps.len() * blocks)
        .map(|_| AtomicUsize::new(0))
        .collect();
    struct OnUnwind<'a>(&'a AtomicBool);
    impl Drop for OnUnwind<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.store(true, Ordering::Release);
            }
        }
    }
    let all = Disjoint::new(tiles);
    let share = n.div_ceil(lanes);
    let lane = |me: usize| {
        for (i, &s) in steps.iter().enumerate() {
            let wait = Wait {
                done: i.checked_sub(1).map(|p| &done[p * blocks..][..blocks]),
                need: &need,
                failed: &failed,
            };
            for k in (me * share..n).chain(0..(me * share).min(n)) {
                if state[k]
                    .compare_exchange(2 * i, 2 * i + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                if failed.load(Ordering::Acquire) {
                    return;
                }
                let guard = OnUnwind(&failed);
                // SAFETY: tile k is claimed for step i by this task alone, and whoever ran
                // its step i − 1 published that work (Release below) before this task
                // claimed it (Acquire above).
                let tile = unsafe { &mut all.slice_mut(k, 1)[0] };
                let b = tile.b;
                f(tile, s, &wait);
                std::mem::forget(guard);
                done[i * blocks + b].fetch_add(1, Ordering::Release);
                state[k].store(2 * i + 2, Ordering::Release);
            }
        }
    };
    par::lanes(lanes, &lane);
}

/// Hands a scratch buffer back to the cache of freed buffers (see `storage`), so the next
/// call of the same size reuses its mapped pages instead of faulting in fresh ones.
fn recycle<T: Element>(buf: Buffer<T>) {
    let n = buf.len();
    drop(Tensor::from_contiguous(buf, &[n]));
}
