//! Running exported models with tract, and comparing with strata.

use strata_onnx::{
    Example, Export, ExportOptions, Graph, GraphInput, Value, export, export_with_inputs,
};
use strata_tensor::{IndexTensor, Tensor};
use tract_onnx::prelude::*;

/// The model in `bytes`, loaded by tract with its input left symbolic (the batch is a
/// dimension named in the file), optimised and ready to run on any batch size.
pub fn load(bytes: &[u8]) -> TypedRunnableModel<TypedModel> {
    tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(bytes))
        .expect("tract reads the model")
        .into_optimized()
        .expect("tract optimises the model")
        .into_runnable()
        .expect("tract plans the model")
}

/// Runs `model` on `input`; returns the output's shape and values.
pub fn run(model: &TypedRunnableModel<TypedModel>, input: &Example) -> (Vec<usize>, Vec<f32>) {
    run_many(model, std::slice::from_ref(input))
}

/// Asserts `actual` ≈ `expected` elementwise: |a − e| ≤ atol + rtol·|e|; the message names
/// the first mismatch.
pub fn assert_close(what: &str, actual: &[f32], expected: &[f32], rtol: f32, atol: f32) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= atol + rtol * e.abs(),
            "{what}: element {i}: tract {a}, strata {e} (rtol {rtol}, atol {atol})"
        );
    }
}

/// Exports `model` traced on `make(3)`, then runs the file with tract on `make(3)` and
/// `make(5)` (one file, two batch sizes) and compares each with `forward` (strata's own
/// forward). Returns the file's bytes.
pub fn check_batches<M: Export + ?Sized>(
    what: &str,
    model: &M,
    make: impl Fn(usize) -> Example,
    forward: impl Fn(&Example) -> Tensor<f32>,
    options: &ExportOptions,
) -> Vec<u8> {
    let exported = export(model, make(3), options).unwrap_or_else(|e| panic!("{what}: {e}"));
    let expected = forward(&make(3));
    assert_eq!(
        exported.output.shape(),
        expected.shape(),
        "{what}: the trace's output"
    );
    assert_close(
        &format!("{what}: trace"),
        &exported.output.to_vec(),
        &expected.to_vec(),
        0.0,
        0.0,
    );
    let bytes = exported.to_bytes();
    let runnable = load(&bytes);
    for batch in [3, 5] {
        let input = make(batch);
        let expected = forward(&input);
        let (shape, values) = run(&runnable, &input);
        assert_eq!(
            shape,
            expected.shape(),
            "{what}: batch {batch}: output shape"
        );
        assert_close(
            &format!("{what}: batch {batch}"),
            &values,
            &expected.to_vec(),
            1e-4,
            1e-5,
        );
    }
    bytes
}

/// A float example `[batch, rest…]` drawn from a seed that depends on the batch.
pub fn floats(batch: usize, rest: &[usize]) -> Example {
    let mut shape = vec![batch];
    shape.extend(rest);
    let mut rng = strata_tensor::seeded_rng(100 + batch as u64);
    Example::Float(Tensor::randn(&shape, &mut rng))
}

/// Indices `[batch, len]` below `vocab`.
pub fn indices(batch: usize, len: usize, vocab: usize) -> Example {
    let data = (0..batch * len)
        .map(|i| ((i * 7 + batch) % vocab) as i64)
        .collect();
    Example::Index(IndexTensor::from_vec(data, &[batch, len]).expect("indices"))
}

/// The float tensor of an example.
pub fn float(x: &Example) -> strata_autograd::Var<f32> {
    match x {
        Example::Float(t) => strata_autograd::Var::new(t.clone()),
        _ => panic!("expected floats"),
    }
}

/// An example as a tract tensor (floats, int64 indices, or a boolean mask).
pub fn to_tract(input: &Example) -> tract_onnx::prelude::Tensor {
    match input {
        Example::Float(t) => {
            tract_ndarray::ArrayD::from_shape_vec(t.shape(), t.contiguous().to_vec())
                .expect("shape")
                .into()
        }
        Example::Index(t) => tract_ndarray::ArrayD::from_shape_vec(t.shape(), t.to_vec())
            .expect("shape")
            .into(),
        Example::Bool(t) => tract_ndarray::ArrayD::from_shape_vec(
            t.shape(),
            t.contiguous().to_vec().iter().map(|&v| v != 0.0).collect(),
        )
        .expect("shape")
        .into(),
    }
}

/// Runs `model` on several inputs; returns the output's shape and values.
pub fn run_many(
    model: &TypedRunnableModel<TypedModel>,
    inputs: &[Example],
) -> (Vec<usize>, Vec<f32>) {
    let values: TVec<TValue> = inputs.iter().map(|x| to_tract(x).into()).collect();
    let out = model.run(values).expect("tract runs the model");
    let view = out[0].to_array_view::<f32>().expect("a float output");
    (view.shape().to_vec(), view.iter().copied().collect())
}

/// Exports a graph of several inputs traced on `make(sizes[0])`, then runs the one file
/// with tract on `make(s)` for every `s` in `sizes` (batch sizes and sequence lengths)
/// and compares with `forward` (strata's own forward). Returns the file's bytes.
pub fn check_inputs<S: Copy + std::fmt::Debug>(
    what: &str,
    sizes: &[S],
    make: impl Fn(S) -> Vec<GraphInput>,
    build: impl Fn(&mut Graph, &[Value]) -> strata_onnx::Result<Value>,
    forward: impl Fn(&[Example]) -> Tensor<f32>,
) -> Vec<u8> {
    let examples = |s: S| -> Vec<Example> { make(s).into_iter().map(|i| i.example).collect() };
    let exported = export_with_inputs(make(sizes[0]), &ExportOptions::default(), |g, xs| {
        build(g, xs)
    })
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    let expected = forward(&examples(sizes[0]));
    assert_eq!(exported.output.shape(), expected.shape(), "{what}: trace");
    assert_close(
        &format!("{what}: trace"),
        &exported.output.to_vec(),
        &expected.to_vec(),
        1e-5,
        1e-6,
    );
    let bytes = exported.to_bytes();
    let runnable = load(&bytes);
    for &s in sizes {
        let inputs = examples(s);
        let expected = forward(&inputs);
        let (shape, values) = run_many(&runnable, &inputs);
        assert_eq!(shape, expected.shape(), "{what}: at {s:?}: output shape");
        assert_close(
            &format!("{what}: at {s:?}"),
            &values,
            &expected.to_vec(),
            1e-4,
            1e-5,
        );
    }
    bytes
}
